// The pipeline: each service's health, consumer lag per partition, rates between two readings.
import { api } from "../api.js";
import { rateChart } from "../charts.js";
import { h, replace, fmtNumber, fmtRate, statusBadge, poll, focusHeading, timeAgo } from "../ui.js";

const EVERY_MS = 3000;

// Rates from two readings of monotonic offsets; a drop (topic recreated) gives no rate.
export function rates(previous, current) {
  if (!previous || !previous.totals || !current.totals) return null;
  const seconds = (new Date(current.as_of) - new Date(previous.as_of)) / 1000;
  if (seconds <= 0) return null;
  const rate = (name) => {
    const delta = current.totals[name] - previous.totals[name];
    return delta >= 0 ? delta / seconds : null;
  };
  return {
    seconds,
    eventsIn: rate("events_produced"),
    eventsProcessed: rate("events_processed"),
    membershipChanges: rate("membership_changes"),
  };
}

function stat(id, label, value, hint) {
  return h("div", { class: "stat", id },
    h("span", { class: "stat-label" }, label),
    h("span", { class: "stat-value" }, value),
    hint ? h("span", { class: "stat-hint" }, hint) : null);
}

export function pipelineView(root) {
  const stats = h("div", { class: "stats", id: "pipeline-stats" });
  const services = h("div", { class: "services", id: "pipeline-services" });
  const lagBody = h("tbody", { id: "lag-body" });
  const asOf = h("p", { class: "muted", "aria-live": "off" });
  const chartHolder = h("div", { class: "chart", id: "rate-chart", role: "img",
    "aria-label": "Events and membership changes per second while this page is open" });
  replace(root,
    h("div", { class: "view-head" }, h("h1", {}, "Pipeline"), asOf),
    h("section", { class: "card", "aria-labelledby": "health-title" },
      h("h2", { id: "health-title" }, "Services"), services),
    h("section", { class: "card", "aria-labelledby": "flow-title" },
      h("h2", { id: "flow-title" }, "Throughput"), stats,
      h("figure", {}, h("figcaption", {}, "Per second, measured while this page is open"),
        chartHolder)),
    h("section", { class: "card", "aria-labelledby": "lag-title" },
      h("h2", { id: "lag-title" }, "Consumer lag (user events)"),
      h("div", { class: "table-wrap" }, h("table", { class: "data-table", id: "lag-table" },
        h("caption", { class: "visually-hidden" }, "Consumer lag per partition"),
        h("thead", {}, h("tr", {}, ["Partition", "End offset", "Committed", "Lag", ""].map((name) =>
          h("th", { scope: "col", class: name && name !== "Partition" ? "num" : undefined },
            name || h("span", { class: "visually-hidden" }, "Lag bar"))))),
        lagBody))));
  focusHeading(root);

  let chart = null;
  let previous = null;
  return poll(async () => {
    const current = await api.pipeline();
    const measured = rates(previous, current);
    previous = current;
    asOf.replaceChildren("Updated ", timeAgo(current.as_of), ` · consumer group ${current.consumer_group}`);
    replace(services, current.services.map((s) => h("div", { class: "service", dataset: { service: s.name } },
      h("h3", {}, s.name), statusBadge(s.status === "not_configured" ? "not configured" : s.status),
      h("ul", { class: "checks" }, Object.entries(s.checks || {}).map(([name, ok]) =>
        h("li", {}, `${name}: ${ok ? "ok" : "failing"}`))),
      s.url ? h("p", { class: "muted" }, s.url) : null,
      s.error ? h("p", { class: "error-text" }, s.error) : null)),
    h("div", { class: "service", dataset: { service: "broker" } }, h("h3", {}, "broker offsets"),
      statusBadge(current.broker.available ? "ready" : "unreachable"),
      current.broker.error ? h("p", { class: "error-text" }, current.broker.error) : null));
    const totals = current.totals || {};
    const lag = current.consumer_lag || [];
    const totalLag = lag.reduce((sum, p) => sum + p.lag, 0);
    replace(stats,
      stat("stat-events", "Events processed / s", fmtRate(measured?.eventsProcessed),
        `${fmtNumber(totals.events_processed)} in total`),
      stat("stat-events-in", "Events in / s", fmtRate(measured?.eventsIn),
        `${fmtNumber(totals.events_produced)} in total`),
      stat("stat-changes", "Membership changes / s", fmtRate(measured?.membershipChanges),
        `${fmtNumber(totals.membership_changes)} in total`),
      stat("stat-lag", "Consumer lag", fmtNumber(current.consumer_lag ? totalLag : null),
        `${lag.length} partitions`),
      stat("stat-dead", "Dead letters", fmtNumber(totals.dead_letters), "held in dead.letters.v1"));
    const widest = Math.max(1, ...lag.map((p) => p.lag));
    replace(lagBody, lag.length ? lag.map((p) => h("tr", { dataset: { partition: String(p.partition) } },
      h("th", { scope: "row" }, String(p.partition)),
      h("td", { class: "num" }, fmtNumber(p.end_offset)),
      h("td", { class: "num" }, fmtNumber(p.committed)),
      h("td", { class: "num" }, fmtNumber(p.lag)),
      h("td", { class: "bar-cell" }, h("span", { class: "bar", style: `width:${(100 * p.lag) / widest}%` })))) :
      h("tr", {}, h("td", { colspan: "5" }, "The broker did not answer.")));
    if (measured) {
      chart = chart || rateChart(chartHolder, ["Events processed/s", "Membership changes/s"]);
      chart.push(new Date(current.as_of).getTime() / 1000,
        [measured.eventsProcessed, measured.membershipChanges]);
    }
  }, EVERY_MS);
}
