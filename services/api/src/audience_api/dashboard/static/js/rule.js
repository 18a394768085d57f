// Audience rules for people: one line of text, a tree, and the explain tree with outcomes.
import { h } from "./ui.js";

const SYMBOLS = { is: "=", is_not: "≠", gt: ">", gte: "≥", lt: "<", lte: "≤" };
const WORDS = {
  contains: "contains", not_contains: "does not contain", starts_with: "starts with",
  ends_with: "ends with", before: "before", after: "after",
};
const COUNTS = { gte: "at least", gt: "more than", lte: "at most", lt: "fewer than", eq: "exactly" };
const UNITS = { m: "minute", h: "hour", d: "day", w: "week" };

const isGroup = (node) => node && Array.isArray(node.rules);

function duration(text) {
  const match = /^(\d+)\s*([mhdw])$/.exec(String(text));
  if (!match) return String(text);
  const n = Number(match[1]);
  return `${n} ${UNITS[match[2]]}${n === 1 ? "" : "s"}`;
}

function value(v) {
  if (Array.isArray(v)) return v.map(value).join(", ");
  if (typeof v === "string") return /^[\w.:-]+$/.test(v) ? v : JSON.stringify(v);
  return String(v);
}

function trait(node) {
  const { field, operator: op, value: v } = node;
  if (op === "exists") return `${field} is set`;
  if (op === "not_exists") return `${field} is not set`;
  if (op === "within_last") return `${field} within the last ${duration(v)}`;
  if (op === "not_within_last") return `${field} not within the last ${duration(v)}`;
  if (op === "in") return `${field} is one of (${value(v)})`;
  if (op === "not_in") return `${field} is none of (${value(v)})`;
  if (op === "between") return `${field} between ${value(v[0])} and ${value(v[1])}`;
  if (op in SYMBOLS) return `${field} ${SYMBOLS[op]} ${value(v)}`;
  return `${field} ${WORDS[op] || op} ${value(v)}`;
}

function event(node) {
  const parts = [`${node.performed === false ? "did not perform" : "performed"} ${value(node.event)}`];
  if (node.where && node.where.length) parts.push(`where ${node.where.map(trait).join(" and ")}`);
  if (node.count) {
    parts.push(`${COUNTS[node.count.operator] || node.count.operator} ${node.count.value} ` +
      `time${node.count.value === 1 ? "" : "s"}`);
  }
  if (node.window && node.window.last) parts.push(`in the last ${duration(node.window.last)}`);
  else if (node.window) parts.push(`between ${node.window.from} and ${node.window.to}`);
  return parts.join(" ");
}

export function conditionText(node) {
  if (isGroup(node)) return groupText(node);
  switch (node.type) {
    case "trait": return trait(node);
    case "event": return event(node);
    case "intent":
      return `intent in ${node.topics.join(", ")} with score ≥ ${node.min_score} ` +
        `in the last ${duration(`${node.days}d`)}`;
    case "audience":
      return `${node.member === false ? "not in" : "in"} audience ` +
        `${node.audience_name ? JSON.stringify(node.audience_name) : node.audience_id}`;
    default: return JSON.stringify(node);
  }
}

function groupText(group) {
  if (!group.rules.length) return "everyone";
  const joiner = group.match === "any" ? " OR " : " AND ";
  const body = group.rules.map((child) =>
    isGroup(child) && child.rules.length > 1 ? `(${groupText(child)})` : conditionText(child),
  ).join(joiner);
  return group.negate ? `NOT (${body})` : body;
}

export const ruleText = (rule) => (rule ? `Users where ${groupText(rule)}` : null);

const groupLabel = (group) =>
  `${group.negate ? "NOT: " : ""}${group.match === "any" ? "ANY of" : "ALL of"}`;

// The rule as nested lists: groups say ALL/ANY, leaves are conditions.
export function ruleTree(rule) {
  const render = (node) => {
    if (isGroup(node)) {
      return h("li", { class: "tree-group" },
        h("span", { class: "tree-label" }, groupLabel(node)),
        h("ul", {}, node.rules.map(render)));
    }
    return h("li", { class: "tree-leaf" },
      h("span", { class: "tree-kind" }, node.type), " ", conditionText(node));
  };
  return h("ul", { class: "tree", "aria-label": "Rule tree" }, render(rule));
}

const observedText = (observed) =>
  observed === null || observed === undefined ? "nothing" :
    typeof observed === "object" ? JSON.stringify(observed) : String(observed);

// Explain: every node with its outcome as a word and a mark, never colour alone.
export function explainTree(tree) {
  const render = (node) => {
    const outcome = node.outcome ? "true" : "false";
    const head = h("span", { class: `outcome outcome-${outcome}` },
      h("span", { "aria-hidden": "true" }, node.outcome ? "✓ " : "✗ "),
      node.outcome ? "matches" : "does not match");
    if (node.type === "group") {
      return h("li", { class: "tree-group", dataset: { outcome } }, head, " ",
        h("span", { class: "tree-label" }, groupLabel(node)),
        h("ul", {}, (node.rules || []).map(render)));
    }
    if (node.type === "list") {
      return h("li", { class: "tree-leaf", dataset: { outcome } }, head, " on the list");
    }
    return h("li", { class: "tree-leaf", dataset: { outcome } }, head, " ",
      h("span", { class: "criteria" }, node.criteria || conditionText(node)),
      h("span", { class: "observed" }, ` — observed: ${observedText(node.observed)}`),
      node.next_change_at ? h("span", { class: "observed" },
        ` (changes at ${new Date(node.next_change_at).toLocaleString()})`) : null);
  };
  return h("ul", { class: "tree explain-tree", "aria-label": "Explanation" }, render(tree));
}
