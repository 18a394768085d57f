// One audience: rule as text and tree, size and flow charts, members, explain, jobs with progress.
import { api, download, itemsOf } from "../api.js";
import { sizeChart, flowChart } from "../charts.js";
import { ruleText, ruleTree, explainTree } from "../rule.js";
import {
  append, h, replace, fmtNumber, fmtTime, timeAgo, statusBadge, progressBar, poll, toast, announce,
  errorText, labelled, focusHeading,
} from "../ui.js";

const PAGE = 20;

export function audienceView(root, audienceId) {
  const stops = [];
  const stopAll = () => stops.splice(0).forEach((stop) => stop());
  replace(root, h("p", { class: "muted" }, "Loading audience…"));

  (async () => {
    let audience;
    try {
      audience = await api.audience(audienceId);
    } catch (error) {
      replace(root, h("h1", {}, "Audience not available"), h("p", {}, errorText(error)),
        h("p", {}, h("a", { href: "#/audiences" }, "Back to audiences")));
      focusHeading(root);
      return;
    }
    const head = header(audience);
    const jobs = h("div", { class: "jobs", id: "jobs", "aria-live": "polite" });
    const charts = h("section", { class: "card", "aria-labelledby": "charts-title" },
      h("h2", { id: "charts-title" }, "History"),
      h("div", { class: "chart-grid" },
        h("figure", { id: "size-figure" }, h("p", { class: "muted" }, "Loading history…")),
        h("figure", { id: "flow-figure" })));
    replace(root,
      h("p", { class: "crumbs" }, h("a", { href: "#/audiences" }, "← Audiences")),
      head.node,
      h("section", { class: "card actions", "aria-labelledby": "actions-title" },
        h("h2", { id: "actions-title" }, "Actions"),
        actionButtons(audience, jobs, stops, head), jobs),
      ruleSection(audience),
      charts,
      membersSection(audience),
      explainSection(audience));
    focusHeading(root);
    drawHistory(audience, charts);
  })();
  return stopAll;
}

function header(audience) {
  const size = h("span", { id: "audience-size" }, fmtNumber(audience.user_count));
  const status = h("span", { id: "audience-status" }, statusBadge(audience.status));
  const refreshed = h("span", {}, "…");
  const node = h("div", { class: "view-head" },
    h("h1", {}, audience.name),
    h("dl", { class: "facts" },
      h("div", {}, h("dt", {}, "Members"), h("dd", {}, size,
        audience.user_count_is_estimate ? " (estimate)" : "")),
      h("div", {}, h("dt", {}, "Status"), h("dd", {}, status)),
      h("div", {}, h("dt", {}, "Kind"), h("dd", {}, audience.kind)),
      h("div", {}, h("dt", {}, "Type"), h("dd", {}, audience.type)),
      h("div", {}, h("dt", {}, "Last refresh"), h("dd", {}, refreshed)),
      h("div", {}, h("dt", {}, "Id"), h("dd", {}, h("code", {}, audience.id)))),
    audience.description ? h("p", {}, audience.description) : null);
  const update = async () => {
    const [fresh, state] = await Promise.all([api.audience(audience.id), api.status(audience.id)]);
    replace(size, fmtNumber(fresh.user_count));
    replace(status, statusBadge(fresh.status));
    replace(refreshed, timeAgo(state.last_refreshed_at));
    return state;
  };
  update().catch(() => replace(refreshed, "—"));
  return { node, update };
}

function ruleSection(audience) {
  const section = h("section", { class: "card", "aria-labelledby": "rule-title" },
    h("h2", { id: "rule-title" }, "Rule"));
  if (!audience.rule) {
    append(section, h("p", {}, `A ${audience.kind} list: members come from `,
      audience.kind === "synced" ? "syncs of its source list." : "CSV imports."));
    return section;
  }
  append(section, 
    h("p", { class: "rule-text", id: "rule-text" }, ruleText(audience.rule)),
    audience.criteria ? h("p", { class: "muted" }, "As written: ", h("q", {}, audience.criteria)) : null,
    h("details", { open: true }, h("summary", {}, "Rule tree"), ruleTree(audience.rule)));
  return section;
}

async function drawHistory(audience, charts) {
  const sizeFigure = charts.querySelector("#size-figure");
  const flowFigure = charts.querySelector("#flow-figure");
  let points;
  try {
    points = itemsOf(await api.history(audience.id));
  } catch (error) {
    replace(sizeFigure, h("p", {}, `No history: ${errorText(error)}`));
    return;
  }
  points = [...points].sort((a, b) => new Date(a.at) - new Date(b.at));
  if (!points.length) {
    replace(sizeFigure, h("p", { class: "muted" }, "No history recorded yet."));
    return;
  }
  sizeChart(sizeFigure, points);
  flowChart(flowFigure, points);
}

// ---- actions with live progress ----------------------------------------------------------

function actionButtons(audience, jobs, stops, head) {
  const buttons = h("div", { class: "button-row" });
  if (audience.kind !== "synced") {
    buttons.append(h("button", { type: "button", id: "refresh-button",
      title: "Rebuild the members now",
      onclick: (e) => refresh(audience, jobs, stops, head, e.currentTarget) }, "Refresh"));
  }
  buttons.append(h("button", { type: "button", id: "export-button",
    onclick: (e) => exportMembers(audience, jobs, stops, e.currentTarget) }, "Export CSV"));
  if (audience.kind === "synced") {
    buttons.append(h("button", { type: "button", id: "sync-button",
      onclick: (e) => sync(audience, jobs, stops, e.currentTarget) }, "Sync now"));
  }
  return buttons;
}

function jobCard(jobs, title) {
  const state = h("div", { class: "job-state" });
  const card = h("div", { class: "job" }, h("h3", {}, title), state);
  jobs.prepend(card);
  return (...children) => replace(state, ...children);
}

async function refresh(audience, jobs, stops, head, button) {
  button.disabled = true;
  const show = jobCard(jobs, "Refresh");
  show(progressBar(0, "Refresh progress"), " starting…");
  let started;
  try {
    started = await api.refresh(audience.id);
  } catch (error) {
    show(h("span", { class: "error-text" }, errorText(error)));
    button.disabled = false;
    return;
  }
  // A synced list refreshes by pulling its source: follow that run instead of the build.
  if (started.run_id) {
    followSync(audience, started.run_id, show, stops, button);
    return;
  }
  stops.push(poll(async () => {
    const state = await head.update();
    show(progressBar(state.progress, "Refresh progress"), " ", statusBadge(state.status),
      state.error ? h("span", { class: "error-text" }, ` ${state.error.message || state.error}`) : "");
    if (state.status === "ready" || state.status === "failed") {
      button.disabled = false;
      announce(`Refresh ${state.status === "ready" ? "finished" : "failed"}`);
      return false;
    }
    return true;
  }, 1000));
}

async function exportMembers(audience, jobs, stops, button) {
  button.disabled = true;
  const show = jobCard(jobs, "Export");
  let started;
  try {
    started = await api.startExport(audience.id);
  } catch (error) {
    show(h("span", { class: "error-text" }, errorText(error)));
    button.disabled = false;
    return;
  }
  stops.push(poll(async () => {
    const run = await api.exportStatus(started.export_id);
    const done = run.status === "completed";
    show(progressBar(run.progress, "Export progress"), " ", statusBadge(run.status),
      ` ${fmtNumber(run.row_count)} of ${fmtNumber(run.rows_total)} rows`,
      run.error ? h("span", { class: "error-text" }, ` ${run.error.message || ""}`) : "",
      done ? h("button", { type: "button", class: "button-quiet", onclick: () =>
        download(`/v1/exports/${encodeURIComponent(run.export_id)}/download`,
          `${audience.name}.csv`).catch((e) => toast(errorText(e), "error")) }, "Download") : "");
    if (done || run.status === "failed") {
      button.disabled = false;
      announce(`Export ${run.status}`);
      return false;
    }
    return true;
  }, 1000));
}

async function sync(audience, jobs, stops, button) {
  button.disabled = true;
  const show = jobCard(jobs, "Sync");
  let started;
  try {
    started = await api.startSync(audience.id);
  } catch (error) {
    show(h("span", { class: "error-text" }, errorText(error)));
    button.disabled = false;
    return;
  }
  followSync(audience, started.run_id, show, stops, button);
}

function followSync(audience, runId, show, stops, button) {
  stops.push(poll(async () => {
    const status = await api.syncRun(audience.id, runId);
    const run = status.run || {};
    // Klaviyo never says how long a list is, so the bar is indeterminate until the run ends.
    show(progressBar(run.progress ?? null, "Sync progress"), " ", statusBadge(run.status),
      ` ${fmtNumber(run.pages)} pages, ${fmtNumber(run.profiles)} ` +
      `profiles, ${fmtNumber(run.entered)} entered, ${fmtNumber(run.exited)} exited`,
      run.error ? h("span", { class: "error-text" }, ` ${run.error.message || ""}`) : "");
    if (run.status === "completed" || run.status === "failed") {
      button.disabled = false;
      announce(`Sync ${run.status}`);
      return false;
    }
    return true;
  }, 1000));
}

// ---- members -----------------------------------------------------------------------------

function membersSection(audience) {
  const search = h("input", { id: "member-search", type: "search", autocomplete: "off",
    placeholder: "User id, email, phone or name" });
  const body = h("tbody", { id: "members-body" });
  const position = h("span", { class: "muted", "aria-live": "polite", id: "members-position" });
  const prev = h("button", { type: "button", class: "button-quiet", id: "members-prev" }, "← Previous");
  const next = h("button", { type: "button", class: "button-quiet", id: "members-next" }, "Next →");
  const cursors = [null]; // cursors[i] opens page i
  let page = 0;

  const load = async () => {
    prev.disabled = next.disabled = true;
    try {
      const data = await api.members(audience.id,
        { first: PAGE, after: cursors[page], search: search.value.trim() || undefined });
      cursors[page + 1] = data.page_info.has_next_page ? data.page_info.end_cursor : undefined;
      replace(body, data.items.length ? data.items.map((m) => h("tr", {},
        h("th", { scope: "row" }, h("code", {}, m.user_id)),
        h("td", {}, m.full_name || "—"), h("td", {}, m.email || "—"), h("td", {}, m.phone || "—"),
        h("td", {}, fmtTime(m.joined_at)),
        h("td", {}, h("button", { type: "button", class: "button-quiet",
          "aria-label": `Explain ${m.user_id}`,
          onclick: () => explainUser(m.user_id) }, "Explain")))) :
        h("tr", {}, h("td", { colspan: "6" }, search.value ? "No member matches." : "No members.")));
      position.textContent = `Page ${page + 1}, ${data.items.length} members shown`;
      prev.disabled = page === 0;
      next.disabled = !cursors[page + 1];
    } catch (error) {
      replace(body, h("tr", {}, h("td", { colspan: "6" }, errorText(error))));
    }
  };
  prev.addEventListener("click", () => { page -= 1; load(); });
  next.addEventListener("click", () => { page += 1; load(); });
  let debounce = null;
  search.addEventListener("input", () => {
    clearTimeout(debounce);
    debounce = setTimeout(() => { cursors.length = 1; page = 0; load(); }, 300);
  });
  load();
  return h("section", { class: "card", "aria-labelledby": "members-title" },
    h("h2", { id: "members-title" }, "Members"),
    h("form", { class: "filters", role: "search", onsubmit: (e) => { e.preventDefault(); load(); } },
      labelled("member-search", "Search members", search)),
    h("div", { class: "table-wrap" }, h("table", { class: "data-table", id: "members-table" },
      h("caption", { class: "visually-hidden" }, "Members"),
      h("thead", {}, h("tr", {}, ["User id", "Name", "Email", "Phone", "Joined", ""].map((name) =>
        h("th", { scope: "col" }, name || h("span", { class: "visually-hidden" }, "Actions"))))),
      body)),
    h("div", { class: "pager" }, prev, position, next));
}

// ---- explain -----------------------------------------------------------------------------

let explainUser = () => {};

function explainSection(audience) {
  const input = h("input", { id: "explain-user", type: "text", autocomplete: "off", required: true,
    spellcheck: "false" });
  const result = h("div", { id: "explain-result", "aria-live": "polite" });
  const run = async () => {
    const userId = input.value.trim();
    if (!userId) return;
    replace(result, h("p", { class: "muted" }, "Explaining…"));
    try {
      const answer = await api.explain(userId, audience.id);
      replace(result,
        h("p", { class: "explain-verdict" }, h("code", {}, userId), answer.matched ?
          " matches the rule" : " does not match the rule", "; ",
        answer.member ? "is a member now." : "is not a member now."),
        explainTree(answer.tree));
    } catch (error) {
      replace(result, h("p", { class: "error-text" }, errorText(error)));
    }
  };
  explainUser = (userId) => {
    input.value = userId;
    input.scrollIntoView({ block: "center" });
    input.focus();
    run();
  };
  return h("section", { class: "card", "aria-labelledby": "explain-title" },
    h("h2", { id: "explain-title" }, "Explain this user"),
    h("form", { class: "filters", onsubmit: (e) => { e.preventDefault(); run(); } },
      labelled("explain-user", "User id", input),
      h("button", { type: "submit", id: "explain-button" }, "Explain")),
    result);
}
