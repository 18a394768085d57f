// Campaigns: audiences in priority order (buttons or drag to reorder) and experiment results.
import { api, itemsOf } from "../api.js";
import { barsChart } from "../charts.js";
import {
  append, h, replace, fmtNumber, statusBadge, toast, announce, errorText, focusHeading, timeAgo,
} from "../ui.js";

const percent = (v) => (v === null || v === undefined ? "—" : `${(v * 100).toFixed(1)}%`);

export function campaignsView(root, campaignId) {
  let stopped = false;
  replace(root, h("div", { class: "view-head" }, h("h1", {}, "Campaigns")),
    h("p", { class: "muted" }, "Loading campaigns…"));
  focusHeading(root);
  (async () => {
    let campaigns;
    try {
      campaigns = itemsOf(await api.campaigns());
    } catch (error) {
      replace(root, h("h1", {}, "Campaigns"), h("p", {}, errorText(error)));
      return;
    }
    if (stopped) return;
    const chosen = campaigns.find((c) => c.id === campaignId) || campaigns[0];
    const detail = h("div", { id: "campaign-detail" });
    replace(root,
      h("div", { class: "view-head" }, h("h1", {}, "Campaigns"),
        h("p", { class: "muted" }, `${campaigns.length} campaigns`)),
      campaigns.length ? h("nav", { "aria-label": "Campaigns", class: "campaign-list" },
        h("ul", {}, campaigns.map((c) => h("li", {},
          h("a", { href: `#/campaigns/${encodeURIComponent(c.id)}`,
            "aria-current": c === chosen ? "page" : undefined },
          c.name, " ", h("span", { class: "muted" },
            `${c.audience_count} audience${c.audience_count === 1 ? "" : "s"}`), " ",
          statusBadge(c.status)))))) :
        h("p", {}, "No campaigns in this project yet."),
      detail);
    focusHeading(root);
    if (chosen) campaignDetail(detail, chosen);
  })();
  return () => { stopped = true; };
}

async function campaignDetail(detail, campaign) {
  const list = h("ol", { class: "priority-list", id: "priority-list",
    "aria-describedby": "priority-help" });
  const experiments = h("div", { id: "experiments" });
  replace(detail,
    h("section", { class: "card", "aria-labelledby": "priority-title" },
      h("h2", { id: "priority-title" }, `${campaign.name}: audiences by priority`),
      h("p", { class: "muted", id: "priority-help" },
        "The first audience a user matches wins. Reorder with the buttons, or drag a row by its handle."),
      list),
    h("section", { class: "card", "aria-labelledby": "experiments-title" },
      h("h2", { id: "experiments-title" }, "Experiments"), experiments));

  let audiences = itemsOf(await api.campaignAudiences(campaign.id));
  let dragging = null;

  const save = async (order, movedId, label) => {
    try {
      audiences = itemsOf(await api.reorder(campaign.id, order));
      render(movedId, label);
      const position = audiences.findIndex((a) => a.id === movedId) + 1;
      announce(`${audiences[position - 1].name} is now priority ${position} of ${audiences.length}`);
    } catch (error) {
      toast(errorText(error), "error");
      render();
    }
  };
  const move = (index, delta, label) => {
    const order = audiences.map((a) => a.id);
    const target = index + delta;
    if (target < 0 || target >= order.length) return;
    [order[index], order[target]] = [order[target], order[index]];
    save(order, order[target], label);
  };
  const render = (focusId, focusLabel) => {
    replace(list, audiences.map((a, i) => {
      const up = h("button", { type: "button", class: "button-quiet", "aria-label": `Move ${a.name} up`,
        disabled: i === 0, dataset: { move: "up" }, onclick: () => move(i, -1, "up") }, "↑");
      const down = h("button", { type: "button", class: "button-quiet",
        "aria-label": `Move ${a.name} down`, disabled: i === audiences.length - 1,
        dataset: { move: "down" }, onclick: () => move(i, 1, "down") }, "↓");
      const item = h("li", { class: "priority-item", draggable: "true",
        dataset: { audienceId: a.id } },
        h("span", { class: "drag-handle", "aria-hidden": "true", title: "Drag to reorder" }, "⠿"),
        h("span", { class: "priority-rank" }, String(a.priority_order + 1)),
        h("div", { class: "priority-body" },
          h("strong", {}, a.name),
          h("span", { class: "muted" }, [
            `${(a.filters || []).length} filters`,
            a.frequency_cap ? `cap ${a.frequency_cap}` : null,
            a.paywall_id ? `paywall ${a.paywall_id}` : null,
            a.experiment ? `experiment ${a.experiment.status}` : null,
          ].filter(Boolean).join(" · "))),
        h("span", { class: "priority-buttons" }, up, down));
      item.addEventListener("dragstart", (e) => {
        dragging = a.id;
        e.dataTransfer.effectAllowed = "move";
        e.dataTransfer.setData("text/plain", a.id);
        item.classList.add("dragging");
      });
      item.addEventListener("dragend", () => { dragging = null; item.classList.remove("dragging"); });
      item.addEventListener("dragover", (e) => { e.preventDefault(); item.classList.add("drop-target"); });
      item.addEventListener("dragleave", () => item.classList.remove("drop-target"));
      item.addEventListener("drop", (e) => {
        e.preventDefault();
        item.classList.remove("drop-target");
        const from = audiences.findIndex((x) => x.id === (dragging || e.dataTransfer.getData("text/plain")));
        if (from < 0 || from === i) return;
        const order = audiences.map((x) => x.id);
        const [moved] = order.splice(from, 1);
        order.splice(i, 0, moved);
        save(order, moved);
      });
      return item;
    }));
    if (focusId) {
      const item = list.querySelector(`[data-audience-id="${CSS.escape(focusId)}"]`);
      const button = item && (item.querySelector(`[data-move="${focusLabel}"]:not([disabled])`) ||
        item.querySelector("button:not([disabled])"));
      if (button) button.focus();
    }
    if (!audiences.length) list.append(h("li", {}, "No audiences in this campaign."));
  };
  render();
  renderExperiments(experiments, audiences.filter((a) => a.experiment));
}

async function renderExperiments(holder, withExperiments) {
  if (!withExperiments.length) {
    replace(holder, h("p", { class: "muted" }, "No audience of this campaign runs an experiment."));
    return;
  }
  replace(holder);
  for (const audience of withExperiments) {
    const section = h("article", { class: "experiment", dataset: { experimentId: audience.experiment.id } },
      h("h3", {}, `${audience.name}: experiment `, h("code", {}, audience.experiment.id)));
    holder.append(section);
    try {
      append(section, experimentResults(await api.experimentResults(audience.experiment.id)));
    } catch (error) {
      section.append(h("p", { class: "error-text" }, errorText(error)));
    }
  }
}

function experimentResults(results) {
  const rows = [...results.variants.map((v) => ({
    label: `${v.is_control ? "control" : "variant"} ${v.paywall_id}`, ...v,
  })), { label: "holdout", traffic_percentage: results.holdout.percentage, ...results.holdout }];
  const figure = h("figure", { class: "experiment-chart" });
  const nodes = [
    h("p", {}, statusBadge(results.status), ` conversion event `, h("code", {}, results.conversion_event),
      `, computed `, timeAgo(results.computed_at), results.promotion ?
        ` · promoted ${results.promotion.variant_id} (${results.promotion.by})` : ""),
    h("div", { class: "table-wrap" }, h("table", { class: "data-table results-table" },
      h("caption", { class: "visually-hidden" }, "Experiment results"),
      h("thead", {}, h("tr", {}, ["Group", "Traffic", "Exposures", "Conversions", "Rate",
        "P(beats control)"].map((name) => h("th", { scope: "col" }, name)))),
      h("tbody", {}, rows.map((r) => h("tr", {},
        h("th", { scope: "row" }, r.label),
        h("td", { class: "num" }, `${r.traffic_percentage}%`),
        h("td", { class: "num" }, fmtNumber(r.exposures)),
        h("td", { class: "num" }, fmtNumber(r.conversions)),
        h("td", { class: "num" }, percent(r.rate)),
        h("td", { class: "num" }, percent(r.probability_to_beat_control))))))),
    figure,
    h("p", { class: "muted" }, results.method_description),
  ];
  // Drawn once the figure is in the page, so the chart can take its width.
  requestAnimationFrame(() => barsChart(figure, "Conversion rate by group",
    rows.map((r) => r.label), rows.map((r) => r.rate ?? 0), percent));
  return nodes;
}
