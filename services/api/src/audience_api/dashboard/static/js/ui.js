// DOM helpers, formatting, polling and announcements shared by the views.

// h("a", {href: "#"}, "text", child): attributes starting with "on" become listeners.
export function h(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on") && typeof value === "function") {
      node.addEventListener(name.slice(2).toLowerCase(), value);
    } else if (name === "dataset") {
      Object.assign(node.dataset, value);
    } else if (name === "class") {
      node.className = value;
    } else {
      node.setAttribute(name, value === true ? "" : value);
    }
  }
  append(node, children);
  return node;
}

// Appends children, skipping null/undefined/false (native append would print "null").
export function append(node, ...children) {
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : String(child));
  }
}

export function replace(node, ...children) {
  node.replaceChildren();
  append(node, ...children);
  return node;
}

const numbers = new Intl.NumberFormat();
export const fmtNumber = (n) => (n === null || n === undefined ? "—" : numbers.format(n));
export const fmtRate = (n) =>
  n === null || n === undefined ? "—" : n < 10 ? n.toFixed(1) : numbers.format(Math.round(n));

export function fmtSigned(n) {
  if (n === null || n === undefined) return "—";
  return n > 0 ? `+${numbers.format(n)}` : n < 0 ? `−${numbers.format(-n)}` : "0";
}

export function fmtTime(value) {
  if (!value) return "—";
  const date = new Date(value);
  return Number.isNaN(date.getTime()) ? String(value) : date.toLocaleString();
}

// "3 min ago" with the exact time in a title, inside a <time> element.
export function timeAgo(value) {
  if (!value) return h("span", {}, "never");
  const date = new Date(value);
  const seconds = Math.round((Date.now() - date.getTime()) / 1000);
  const units = [["day", 86400], ["hour", 3600], ["minute", 60], ["second", 1]];
  const rel = new Intl.RelativeTimeFormat(undefined, { numeric: "auto" });
  let text = rel.format(0, "second");
  for (const [unit, size] of units) {
    if (Math.abs(seconds) >= size) { text = rel.format(-Math.round(seconds / size), unit); break; }
  }
  return h("time", { datetime: date.toISOString(), title: date.toLocaleString() }, text);
}

const STATUS_TONES = {
  ready: "good", completed: "good", healthy: "good",
  building: "busy", pending: "busy", queued: "busy", running: "busy", syncing: "busy",
  failed: "bad", not_ready: "bad", unreachable: "bad",
};
export const statusBadge = (status) =>
  h("span", { class: `badge badge-${STATUS_TONES[status] || "neutral"}` },
    String(status || "unknown").replaceAll("_", " "));

export function progressBar(fraction, label) {
  const known = typeof fraction === "number";
  const percent = known ? Math.round(fraction * 100) : null;
  return h("div", { class: "progress" },
    h("progress", { max: "100", value: known ? String(percent) : undefined, "aria-label": label }),
    h("span", { class: "progress-text" }, known ? `${percent}%` : "…"));
}

export function announce(message) {
  const region = document.getElementById("announcer");
  region.textContent = "";
  // A fresh node after a tick so screen readers announce repeated messages too.
  setTimeout(() => { region.textContent = message; }, 50);
}

export function toast(message, tone = "info") {
  const box = h("div", { class: `toast toast-${tone}`, role: tone === "error" ? "alert" : "status" },
    message);
  document.getElementById("toasts").append(box);
  setTimeout(() => box.remove(), 6000);
}

export const errorText = (error) =>
  error && error.code ? `${error.message} (${error.code})` : String(error && error.message || error);

// Calls fn now and every `ms` until stop() or fn returns false; never overlaps itself.
export function poll(fn, ms) {
  let stopped = false;
  let timer = null;
  const tick = async () => {
    if (stopped) return;
    let again = true;
    try { again = (await fn()) !== false; } catch (error) { toast(errorText(error), "error"); }
    if (!stopped && again) timer = setTimeout(tick, ms);
  };
  tick();
  return () => { stopped = true; clearTimeout(timer); };
}

// Runs async jobs over items with at most `width` at a time (the API rate-limits per key).
export async function pool(items, width, job) {
  const queue = [...items];
  const workers = Array.from({ length: Math.min(width, queue.length) }, async () => {
    while (queue.length) await job(queue.shift());
  });
  await Promise.all(workers);
}

export function labelled(id, text, control) {
  return h("div", { class: "field" }, h("label", { for: id }, text), control);
}

// Moves focus to a view's heading once it has rendered, so keyboard users land in context.
export function focusHeading(root) {
  const heading = root.querySelector("h1");
  if (heading) {
    heading.setAttribute("tabindex", "-1");
    heading.focus({ preventScroll: false });
    document.title = `${heading.textContent} · Audiences`;
  }
}
