// The audiences table: name, kind, type, status, size, 24 h change, last refresh; filter/search.
import { api, itemsOf } from "../api.js";
import {
  h, replace, fmtNumber, fmtSigned, timeAgo, statusBadge, pool, labelled, focusHeading,
  errorText,
} from "../ui.js";

const MAX_AUDIENCES = 1000;
const DAY_MS = 24 * 3600 * 1000;

// The net change of the last 24 hours: entries minus exits of the history points inside it.
export function change24h(points, now = Date.now()) {
  const recent = points.filter((p) => new Date(p.at).getTime() >= now - DAY_MS);
  if (!points.length) return null;
  return recent.reduce((sum, p) => sum + (p.entered || 0) - (p.exited || 0), 0);
}

async function allAudiences() {
  const items = [];
  let after = null;
  do {
    const page = await api.audiences({ first: 100, after });
    items.push(...page.items);
    after = page.page_info.has_next_page ? page.page_info.end_cursor : null;
  } while (after && items.length < MAX_AUDIENCES);
  return items;
}

export function audiencesView(root) {
  let stopped = false;
  const search = h("input", { id: "audience-search", type: "search", placeholder: "Name or id",
    autocomplete: "off" });
  const kind = h("select", { id: "audience-kind" },
    ["all", "dynamic", "static", "synced"].map((k) => h("option", { value: k }, k)));
  const status = h("select", { id: "audience-status" },
    ["all", "ready", "building", "pending", "failed"].map((s) => h("option", { value: s }, s)));
  const summary = h("p", { class: "muted", id: "audience-summary", "aria-live": "polite" },
    "Loading audiences…");
  const body = h("tbody");
  const table = h("table", { class: "data-table", id: "audiences-table" },
    h("caption", { class: "visually-hidden" }, "Audiences of the project"),
    h("thead", {}, h("tr", {},
      ["Name", "Kind", "Type", "Status", "Size", "24 h change", "Last refresh"].map((name, i) =>
        h("th", { scope: "col", class: i >= 4 && i <= 5 ? "num" : undefined }, name)))),
    body);
  replace(root,
    h("div", { class: "view-head" }, h("h1", {}, "Audiences"), summary),
    h("form", { class: "filters", role: "search", onsubmit: (e) => e.preventDefault() },
      labelled("audience-search", "Search", search),
      labelled("audience-kind", "Kind", kind),
      labelled("audience-status", "Status", status)),
    h("div", { class: "table-wrap" }, table));
  focusHeading(root);

  let rows = [];
  const applyFilters = () => {
    const needle = search.value.trim().toLowerCase();
    let shown = 0;
    for (const row of rows) {
      const a = row.audience;
      const visible =
        (!needle || a.name.toLowerCase().includes(needle) || a.id.toLowerCase().includes(needle)) &&
        (kind.value === "all" || a.kind === kind.value) &&
        (status.value === "all" || a.status === status.value);
      row.tr.hidden = !visible;
      shown += visible ? 1 : 0;
    }
    summary.textContent = `${shown} of ${rows.length} audiences shown`;
  };
  for (const control of [search, kind, status]) control.addEventListener("input", applyFilters);

  (async () => {
    let audiences;
    try {
      audiences = await allAudiences();
    } catch (error) {
      summary.textContent = `Could not load audiences: ${errorText(error)}`;
      return;
    }
    if (stopped) return;
    rows = audiences.map((a) => {
      const change = h("td", { class: "num", dataset: { col: "change" } }, "…");
      const refreshed = h("td", { dataset: { col: "refreshed" } }, "…");
      const tr = h("tr", { dataset: { audienceId: a.id } },
        h("th", { scope: "row" }, h("a", { href: `#/audiences/${encodeURIComponent(a.id)}` }, a.name)),
        h("td", {}, a.kind), h("td", {}, a.type), h("td", {}, statusBadge(a.status)),
        h("td", { class: "num" }, fmtNumber(a.user_count), a.user_count_is_estimate ? " (est.)" : ""),
        change, refreshed);
      return { audience: a, tr, change, refreshed };
    });
    replace(body, rows.length ? rows.map((r) => r.tr) :
      h("tr", {}, h("td", { colspan: "7" }, "No audiences yet.")));
    applyFilters();
    // Details per row, a few at a time: the API rate-limits each key.
    await pool(rows, 4, async (row) => {
      if (stopped) return;
      const [history, state] = await Promise.allSettled([
        api.history(row.audience.id), api.status(row.audience.id),
      ]);
      if (history.status === "fulfilled") {
        const delta = change24h(itemsOf(history.value));
        replace(row.change, h("span", { class: delta > 0 ? "up" : delta < 0 ? "down" : "",
          "aria-label": delta === null ? "no history" : `${fmtSigned(delta)} in 24 hours` },
        fmtSigned(delta)));
      } else replace(row.change, "—");
      replace(row.refreshed,
        state.status === "fulfilled" ? timeAgo(state.value.last_refreshed_at) : "—");
    });
  })();
  return () => { stopped = true; };
}
