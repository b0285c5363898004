// Pieces several views share: one-line summaries of triggers and targets, flash messages, problem text.

import { h, clear } from "../lib/dom.js";

export function triggerSummary(trigger) {
  switch (trigger?.type) {
    case "CRON":
      return `CRON ${trigger.cron}`;
    case "RRULE":
      return `RRULE ${trigger.rrule.replace(/\s+/g, " ")}`;
    case "FIXED_DELAY":
      return `every ${trigger.delaySec} s after the previous run`;
    case "ONE_SHOT":
      return `once at ${trigger.startAt}`;
    default:
      return "";
  }
}

export function targetSummary(target) {
  switch (target?.kind) {
    case "EVENT":
      return `event → ${target.eventTopic}`;
    case "QUEUE":
      return `queue → ${target.queue.topic}`;
    case "HTTP":
      return `${target.http.method || "POST"} ${target.http.url}`;
    default:
      return "";
  }
}

export function problemText(error) {
  const p = error.problem || {};
  const fields = (error.fieldErrors || []).map((e) => `${e.field}: ${e.reason}`);
  const head = p.title ? `${p.title}${p.detail ? ": " : ""}` : "";
  const detail = p.detail || error.message;
  return fields.length > 1 ? `${head}${fields.join("; ")}` : `${head}${detail}`;
}

let flashTimer = null;

export function flash(message, kind = "info") {
  const el = document.getElementById("flash");
  clearTimeout(flashTimer);
  clear(el);
  el.className = `flash flash-${kind}`;
  el.append(h("span", { "data-testid": "flash" }, message), h("button", { class: "link", onclick: () => (el.hidden = true) }, "dismiss"));
  el.hidden = false;
  if (kind !== "error") flashTimer = setTimeout(() => (el.hidden = true), 6000);
}

export function errorBox(error) {
  return h("div", { class: "alert alert-error", "data-testid": "error" }, problemText(error));
}

export function labelsOf(labels) {
  return Object.entries(labels || {}).map(([k, v]) => h("span", { class: "chip", title: `${k}:${v}` }, `${k}: ${v}`));
}
