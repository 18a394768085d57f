// Syncs, CSV imports and unloads of the project: progress, row counts and errors.
import { api, itemsOf } from "../api.js";
import {
  h, replace, fmtNumber, timeAgo, statusBadge, progressBar, poll, focusHeading, labelled,
} from "../ui.js";

const ACTIVE = new Set(["queued", "running", "syncing", "importing", "exporting"]);

function rowCounts(run) {
  const r = run.rows || {};
  if (run.kind === "sync") {
    return `${fmtNumber(r.pages)} pages, ${fmtNumber(r.profiles)} profiles, ` +
      `${fmtNumber(r.entered)} entered, ${fmtNumber(r.exited)} exited`;
  }
  if (run.kind === "import") {
    return `${fmtNumber(r.imported)} imported, ${fmtNumber(r.failed)} failed of ${fmtNumber(r.total)}`;
  }
  return `${fmtNumber(r.written)} of ${fmtNumber(r.total)} written`;
}

function problems(run) {
  const list = [...(run.error ? [run.error] : []), ...(run.errors || [])];
  if (!list.length) return "none";
  return h("details", {}, h("summary", {}, `${list.length} error${list.length === 1 ? "" : "s"}`),
    h("ul", { class: "errors" }, list.map((e) => h("li", {},
      typeof e === "string" ? e : [e.row !== undefined ? `row ${e.row}: ` : "",
        e.message || e.code || JSON.stringify(e)].join("")))));
}

export function runsView(root) {
  const kind = h("select", { id: "run-kind" },
    [["", "all"], ["sync", "syncs"], ["import", "imports"], ["export", "exports"]].map(([value, text]) =>
      h("option", { value }, text)));
  const body = h("tbody", { id: "runs-body" });
  const note = h("p", { class: "muted", "aria-live": "polite" });
  replace(root,
    h("div", { class: "view-head" }, h("h1", {}, "Syncs and imports"), note),
    h("form", { class: "filters", onsubmit: (e) => e.preventDefault() },
      labelled("run-kind", "Show", kind)),
    h("div", { class: "table-wrap" }, h("table", { class: "data-table", id: "runs-table" },
      h("caption", { class: "visually-hidden" }, "Recent runs"),
      h("thead", {}, h("tr", {}, ["Kind", "Audience", "Status", "Progress", "Rows", "Errors",
        "Started", "Finished"].map((name) => h("th", { scope: "col" }, name)))),
      body)));
  focusHeading(root);

  const names = new Map();
  let stop = null;
  const start = () => {
    if (stop) stop();
    stop = poll(async () => {
      if (!names.size) {
        for (const a of itemsOf(await api.audiences({ first: 100 }))) names.set(a.id, a.name);
      }
      const runs = itemsOf(await api.runs({ kind: kind.value || undefined }));
      replace(body, runs.length ? runs.map((run) => h("tr", { dataset: { runId: run.id } },
        h("th", { scope: "row" }, run.kind, run.mode ? h("span", { class: "muted" }, ` ${run.mode}`) : ""),
        h("td", {}, h("a", { href: `#/audiences/${encodeURIComponent(run.audience_id)}` },
          names.get(run.audience_id) || run.audience_id)),
        h("td", {}, statusBadge(run.status)),
        h("td", {}, progressBar(run.progress, `${run.kind} ${run.id} progress`)),
        h("td", {}, rowCounts(run)),
        h("td", {}, problems(run)),
        h("td", {}, timeAgo(run.created_at)),
        h("td", {}, run.finished_at ? timeAgo(run.finished_at) : "—"))) :
        h("tr", {}, h("td", { colspan: "8" }, "No runs yet.")));
      const active = runs.filter((run) => ACTIVE.has(run.status)).length;
      note.textContent = active ? `${active} in progress; updating every 2 s` :
        `${runs.length} recent runs`;
      return true;
    }, 2000);
  };
  kind.addEventListener("change", start);
  start();
  return () => stop && stop();
}
