// The cohort table: click a header to sort (again to reverse), type to filter, click a row to open it.
// The rows are rendered by the server (templates/cohort.html); each cell carries its sort key in
// data-value, each row its search text in data-search.

const table = document.getElementById("cohort");
const body = table.tBodies[0];
const filterBox = document.getElementById("cohort-filter");
const countLabel = document.getElementById("cohort-count");
const emptyRow = body.querySelector("tr.empty-row");
const rows = Array.from(body.querySelectorAll("tr[data-slide-id]"));
const headers = Array.from(table.tHead.rows[0].cells);

const collator = new Intl.Collator(undefined, { numeric: true, sensitivity: "base" });

function sortKey(row, column, kind) {
  const text = row.cells[column].dataset.value ?? row.cells[column].textContent.trim();
  if (kind === "number") {
    const value = Number.parseFloat(text);
    return Number.isFinite(value) ? value : null;
  }
  return text;
}

function sortBy(column) {
  const th = headers[column];
  const kind = th.dataset.sort;
  const direction = th.getAttribute("aria-sort") === "ascending" ? "descending" : "ascending";
  for (const other of headers) if (other.classList.contains("sortable")) other.setAttribute("aria-sort", "none");
  th.setAttribute("aria-sort", direction);
  const sign = direction === "ascending" ? 1 : -1;
  const keyed = rows.map((row, i) => ({ row, i, key: sortKey(row, column, kind) }));
  keyed.sort((a, b) => {
    if (a.key === null && b.key === null) return a.i - b.i;
    if (a.key === null) return 1; // missing values last, whatever the direction
    if (b.key === null) return -1;
    const c = kind === "number" ? a.key - b.key : collator.compare(a.key, b.key);
    return c !== 0 ? sign * c : a.i - b.i;
  });
  for (const { row } of keyed) body.insertBefore(row, emptyRow);
}

function applyFilter() {
  const words = filterBox.value.trim().toLowerCase().split(/\s+/).filter(Boolean);
  let shown = 0;
  for (const row of rows) {
    const visible = words.every((w) => row.dataset.search.includes(w));
    row.hidden = !visible;
    shown += visible;
  }
  emptyRow.hidden = shown > 0;
  countLabel.textContent = `${shown} of ${rows.length} slides`;
}

headers.forEach((th, column) => {
  if (!th.classList.contains("sortable")) return;
  th.tabIndex = 0;
  th.addEventListener("click", () => sortBy(column));
  th.addEventListener("keydown", (e) => {
    if (e.key === "Enter" || e.key === " ") { e.preventDefault(); sortBy(column); }
  });
});

filterBox.addEventListener("input", applyFilter);

body.addEventListener("click", (e) => {
  const row = e.target.closest("tr.readable");
  if (!row || e.target.closest("a")) return; // links navigate by themselves (and open in new tabs)
  window.location.assign(row.dataset.href);
});

applyFilter();
