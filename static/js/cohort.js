// The cohort table: click a header to sort (again to reverse), type to filter, click a row to open it.
// The rows are rendered by the server (templates/cohort.html); each cell carries its sort key in
// data-value, each row its search text in data-search. Where the cohort has ground-truth
// annotations (--annotations), the localisation columns come from /api/localization after the page
// shows (one figure per annotated class and slide; the footer holds the cohort mean), sortable too.

const table = document.getElementById("cohort");
const tbody = table.tBodies[0];
const filterBox = document.getElementById("cohort-filter");
const countLabel = document.getElementById("cohort-count");
const emptyRow = tbody.querySelector("tr.empty-row");
const rows = Array.from(tbody.querySelectorAll("tr[data-slide-id]"));
const headRow = table.tHead.rows[0];
const headers = () => Array.from(headRow.cells);

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
  const th = headers()[column];
  const kind = th.dataset.sort;
  const direction = th.getAttribute("aria-sort") === "ascending" ? "descending" : "ascending";
  for (const other of headers()) if (other.classList.contains("sortable")) other.setAttribute("aria-sort", "none");
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
  for (const { row } of keyed) tbody.insertBefore(row, emptyRow);
}

const disagreeBox = document.getElementById("cohort-disagree");

function applyFilter() {
  const words = filterBox.value.trim().toLowerCase().split(/\s+/).filter(Boolean);
  const onlyDisagreeing = disagreeBox?.checked;
  let shown = 0;
  for (const row of rows) {
    const visible = words.every((w) => row.dataset.search.includes(w))
      && (!onlyDisagreeing || row.dataset.disagree === "true");
    row.hidden = !visible;
    shown += visible;
  }
  emptyRow.hidden = shown > 0;
  countLabel.textContent = `${shown} of ${rows.length} slides`;
}

function makeSortable(th, column) {
  if (!th.classList.contains("sortable")) return;
  th.tabIndex = 0;
  th.addEventListener("click", () => sortBy(column));
  th.addEventListener("keydown", (e) => {
    if (e.key === "Enter" || e.key === " ") { e.preventDefault(); sortBy(column); }
  });
}

headers().forEach(makeSortable);

const progress = document.getElementById("cohort-progress");

/** A cohort route's whole answer: it computes within a time budget and lists the slides left as
 *  `pending`, so ask again (their figures are cached by then) until none is. */
async function fetchComplete(url, what) {
  for (;;) {
    const response = await fetch(url, { headers: { Accept: "application/json" } });
    if (!response.ok) return null;
    const body = await response.json();
    if (!body.pending || !body.pending.length) {
      progress.textContent = "";
      return body;
    }
    progress.textContent = `${what}: ${body.slides.length} slides done, ${body.pending.length} to go…`;
  }
}

/** The footer row of cohort means (made once; its label spans the columns that have no mean). */
function footerRow(span) {
  let foot = table.tFoot.rows[0];
  if (!foot) {
    foot = document.createElement("tr");
    foot.className = "cohort-mean";
    const label = document.createElement("th");
    label.scope = "row";
    label.colSpan = span;
    label.textContent = "Cohort mean";
    foot.append(label);
    table.tFoot.append(foot);
  }
  return foot;
}

function sortableHead(text, help) {
  const th = document.createElement("th");
  th.scope = "col";
  th.className = "sortable right";
  th.dataset.sort = "number";
  th.setAttribute("aria-sort", "none");
  th.title = help;
  th.append(document.createTextNode(text));
  const arrow = document.createElement("span");
  arrow.className = "arrow";
  th.append(arrow);
  return th;
}

/** Spearman's rho of the first two experiments' attention per slide, its mean in the footer. */
async function addAgreement(url) {
  const body = await fetchComplete(url, "agreement");
  if (!body) return;
  const first = headers().length;
  const th = sortableHead(`ρ ${body.a} · ${body.b}`, `Spearman's rho of ${body.a}'s and ${body.b}'s attention `
    + "(shared patches, or the cells of a common raster at the coarser patch size)");
  th.classList.add("agreement-head");
  headRow.append(th);
  makeSortable(th, first);
  const bySlide = new Map(body.slides.map((s) => [s.slide_id, s]));
  for (const row of rows) {
    const cell = numberCell("td", bySlide.get(row.dataset.slideId)?.spearman ?? null);
    cell.classList.replace("localization-cell", "agreement-cell");
    row.append(cell);
  }
  emptyRow.cells[0].colSpan = headers().length;
  const mean = numberCell("td", body.mean_spearman);
  mean.classList.replace("localization-cell", "agreement-cell");
  mean.title = `mean over ${body.slides_with_rho} slides`;
  footerRow(first).append(mean);
  table.dataset.agreementLoaded = "true";
}

const FIGURES = [
  ["auroc", "AUROC", "AUROC of the attention against 'patch centre inside the annotation'"],
  ["top10", "Top-10 in", "share of the 10 highest-attention patches whose centre lies inside"],
  ["top5pct", "Top-5 % in", "share of the slide's top 5 % patches whose centre lies inside"],
  ["dice", "Dice", "Dice of the region at or above the threshold with the annotation"],
];

function figure(c, key) {
  return { auroc: c.auroc, top10: c.top_inside["10"], top5pct: c.top_inside["5%"], dice: c.dice }[key];
}

function numberCell(tag, value) {
  const cell = document.createElement(tag);
  cell.className = "num localization-cell";
  cell.dataset.value = value === null || value === undefined ? "" : String(value);
  cell.textContent = value === null || value === undefined ? "–" : value.toFixed(2);
  return cell;
}

/** Add one column per annotated class and figure, and the cohort means as the footer. */
async function addLocalization(url) {
  const body = await fetchComplete(url, "localisation");
  if (!body) return;
  const classes = Object.keys(body.mean).sort(collator.compare);
  if (!classes.length) return;
  const bySlide = new Map(body.slides.map((s) => [s.slide_id, new Map(s.classes.map((c) => [c.class, c]))]));
  const first = headers().length;
  for (const name of classes) {
    for (const [, label, help] of FIGURES) {
      const th = sortableHead(`${label} · ${name}`,
        `${name}: ${help} (predicted class, percentile, threshold ${body.threshold})`);
      th.classList.add("localization-head");
      headRow.append(th);
    }
  }
  headers().slice(first).forEach((th, i) => makeSortable(th, first + i));
  const problems = new Map(body.slides.filter((s) => s.error).map((s) => [s.slide_id, s.error]));
  for (const row of rows) {
    const found = bySlide.get(row.dataset.slideId);
    const problem = problems.get(row.dataset.slideId);
    for (const name of classes) {
      const c = found?.get(name);
      for (const [key] of FIGURES) {
        const cell = numberCell("td", c ? figure(c, key) : null);
        if (problem) { // a ground-truth file that could not be read, not "no ground truth"
          cell.textContent = "⚠";
          cell.title = problem;
          cell.classList.add("localization-error");
        }
        row.append(cell);
      }
    }
  }
  emptyRow.cells[0].colSpan = headers().length;
  const foot = footerRow(first);
  const counted = Math.max(...classes.map((n) => body.mean[n].slides));
  foot.cells[0].dataset.annotated = String(counted);
  foot.cells[0].textContent = `Cohort mean (${counted} annotated slide${counted === 1 ? "" : "s"})`;
  for (const name of classes) {
    for (const [key] of FIGURES) {
      const n = body.mean[name].counts?.[key] ?? body.mean[name].slides;
      const cell = numberCell("td", body.mean[name][key]);
      cell.title = `${name}: mean over ${n} slide${n === 1 ? "" : "s"}`;
      foot.append(cell);
    }
  }
  table.dataset.localizationLoaded = "true";
}

// one after the other: the columns (and the footer's cells) keep one order
(async () => {
  if (table.dataset.agreement) await addAgreement(table.dataset.agreement).catch((err) => console.warn("agreement:", err.message));
  if (table.dataset.localization) await addLocalization(table.dataset.localization).catch((err) => console.warn("localization:", err.message));
})();

filterBox.addEventListener("input", applyFilter);
disagreeBox?.addEventListener("change", applyFilter);

tbody.addEventListener("click", (e) => {
  const row = e.target.closest("tr.readable");
  if (!row || e.target.closest("a")) return; // links navigate by themselves (and open in new tabs)
  window.location.assign(row.dataset.href);
});

applyFilter();
