// uPlot charts (vendored, see vendor/uplot/README.md) with a data table for screen readers.
import { h, fmtNumber, fmtRate } from "./ui.js";

const COLORS = { size: "#1d5fbf", entered: "#1a7f37", exited: "#b35900", rate: "#6f42c1" };
const live = new Set();

// Chart sizes follow their container; one observer serves every chart on the page.
const resizer = new ResizeObserver((entries) => {
  for (const entry of entries) {
    const chart = entry.target._chart;
    if (chart) chart.setSize({ width: Math.max(240, entry.contentRect.width), height: chart.height });
  }
});

export function destroyCharts() {
  for (const chart of live) {
    resizer.unobserve(chart.root.parentElement);
    chart.destroy();
  }
  live.clear();
}

function mount(holder, options, data) {
  const width = Math.max(240, holder.clientWidth || 600);
  const chart = new window.uPlot({ width, height: 220, ...options }, data, holder);
  holder._chart = chart;
  holder.dataset.points = String(data[0].length);
  live.add(chart);
  resizer.observe(holder);
  return chart;
}

function dataTable(caption, headers, rows) {
  return h("details", { class: "chart-data" },
    h("summary", {}, "Show the data as a table"),
    h("div", { class: "table-wrap" },
      h("table", {},
        h("caption", { class: "visually-hidden" }, caption),
        h("thead", {}, h("tr", {}, headers.map((name) => h("th", { scope: "col" }, name)))),
        h("tbody", {}, rows.map((row) => h("tr", {}, row.map((cell) => h("td", {}, cell))))))));
}

const seconds = (at) => new Date(at).getTime() / 1000;

// Half an hour either side: a single hourly point (or bar) then sits in the middle of a sane
// axis instead of uPlot stretching one instant over years.
// (From the data itself: for a single point uPlot hands the range function a span of years.)
const HALF_HOUR = 1800;
const dataSpan = (u, min, max) => {
  const xs = u.data[0];
  return xs.length ? [xs[0], xs[xs.length - 1]] : [min, max];
};
const paddedTime = {
  time: true,
  range: (u, min, max) => {
    const [lo, hi] = dataSpan(u, min, max);
    return [lo - HALF_HOUR, hi + HALF_HOUR];
  },
};

// Size over time: one line of the member count at each history point.
export function sizeChart(figure, points) {
  const xs = points.map((p) => seconds(p.at));
  const ys = points.map((p) => p.count);
  const holder = h("div", { class: "chart", id: "size-chart", role: "img",
    "aria-label": `Audience size over time, ${points.length} points` });
  figure.replaceChildren(h("figcaption", {}, "Size over time"), holder,
    dataTable("Size over time", ["Time", "Members"],
      points.map((p) => [new Date(p.at).toLocaleString(), fmtNumber(p.count)])));
  return mount(holder, {
    series: [
      {},
      { label: "Members", stroke: COLORS.size, width: 2, fill: "rgba(29,95,191,0.08)",
        points: { show: true, size: 5 } },
    ],
    axes: [{}, { values: (u, ticks) => ticks.map(fmtNumber) }],
    scales: { x: paddedTime, y: { range: (u, min, max) => [0, Math.max(1, max * 1.15)] } },
  }, [xs, ys]);
}

// Entered (up) and exited (down) per hour as diverging bars.
export function flowChart(figure, points) {
  const xs = points.map((p) => seconds(p.at));
  const entered = points.map((p) => p.entered || 0);
  const exited = points.map((p) => -(p.exited || 0));
  const holder = h("div", { class: "chart", id: "flow-chart", role: "img",
    "aria-label": `Members entered and exited per hour, ${points.length} hours` });
  figure.replaceChildren(h("figcaption", {}, "Entered and exited per hour"), holder,
    dataTable("Entered and exited per hour", ["Hour", "Entered", "Exited"],
      points.map((p) => [new Date(p.at).toLocaleString(), fmtNumber(p.entered || 0),
        fmtNumber(p.exited || 0)])));
  const bars = window.uPlot.paths.bars({ size: [0.7, 40] });
  const magnitude = (u, v) => (v === null || v === undefined ? "—" : fmtNumber(Math.abs(v)));
  return mount(holder, {
    series: [
      {},
      { label: "Entered", stroke: COLORS.entered, fill: COLORS.entered, paths: bars,
        points: { show: false }, value: magnitude },
      { label: "Exited", stroke: COLORS.exited, fill: COLORS.exited, paths: bars,
        points: { show: false }, value: magnitude },
    ],
    axes: [{}, { values: (u, ticks) => ticks.map((t) => fmtNumber(Math.abs(t))) }],
    scales: {
      x: paddedTime,
      y: { range: (u, min, max) => [Math.min(0, min * 1.15), Math.max(1, max * 1.15)] },
    },
  }, [xs, entered, exited]);
}

// A rolling line of rates measured while the page is open (pipeline view).
export function rateChart(holder, labels) {
  const data = [[], ...labels.map(() => [])];
  const palette = [COLORS.rate, COLORS.entered, COLORS.exited, COLORS.size];
  const chart = mount(holder, {
    height: 180,
    series: [{}, ...labels.map((label, i) => ({ label, stroke: palette[i % palette.length], width: 2,
      value: (u, v) => fmtRate(v) }))],
    scales: {
      x: {
        time: true,
        range: (u, min, max) => {
          const [lo, hi] = dataSpan(u, min, max);
          return hi - lo < 60 ? [hi - 60, hi] : [lo, hi];
        },
      },
      y: { range: (u, min, max) => [0, Math.max(1, max * 1.15)] },
    },
  }, data);
  return {
    push(at, values) {
      data[0].push(at);
      values.forEach((v, i) => data[i + 1].push(v));
      if (data[0].length > 120) data.forEach((column) => column.shift());
      chart.setData(data);
      holder.dataset.points = String(data[0].length);
    },
  };
}

// Experiment results: one bar per variant.
export function barsChart(figure, caption, labels, values, format) {
  const xs = labels.map((_, i) => i);
  const holder = h("div", { class: "chart", role: "img", "aria-label": caption });
  figure.replaceChildren(h("figcaption", {}, caption), holder,
    dataTable(caption, ["Variant", "Value"], labels.map((label, i) => [label, format(values[i])])));
  return mount(holder, {
    height: 200,
    series: [{}, { label: caption, stroke: COLORS.size, fill: COLORS.size,
      paths: window.uPlot.paths.bars({ size: [0.6, 80] }), points: { show: false },
      value: (u, v) => format(v) }],
    axes: [
      { splits: () => xs, values: (u, ticks) => ticks.map((t) => labels[t] ?? "") },
      { values: (u, ticks) => ticks.map(format) },
    ],
    scales: {
      x: { time: false, range: [-0.5, labels.length - 0.5] },
      y: { range: (u, min, max) => [0, Math.max(0.01, max * 1.2)] },
    },
  }, [xs, values]);
}
