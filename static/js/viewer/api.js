// JSON from the viewer's API. Errors come back as {error, status} (viewer/errors.py).

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

export async function getJSON(url, options = {}) {
  let response;
  try {
    response = await fetch(url, { headers: { Accept: "application/json" }, ...options });
  } catch (err) {
    throw new ApiError(0, `the viewer server cannot be reached (${err.message})`);
  }
  let body;
  try {
    body = await response.json();
  } catch {
    body = null;
  }
  if (!response.ok) {
    throw new ApiError(response.status, (body && body.error) || `${response.status} ${response.statusText}`);
  }
  return body;
}

/** `template` with `{name}` placeholders filled (e.g. urls.patch_image). */
export function fillUrl(template, values) {
  return template.replace(/\{(\w+)\}/g, (_, key) => encodeURIComponent(values[key]));
}

/** A URL with query parameters appended. */
export function withQuery(url, params) {
  const q = new URLSearchParams();
  for (const [key, value] of Object.entries(params)) {
    if (value !== null && value !== undefined) q.set(key, String(value));
  }
  const text = q.toString();
  return text ? `${url}${url.includes("?") ? "&" : "?"}${text}` : url;
}
