// The tenant's schedules: search by name prefix, filter by labels and status, page through them.

import { api } from "../lib/api.js";
import { badge, debounce, h } from "../lib/dom.js";
import { session } from "../lib/session.js";
import { formatLocal, fromNow } from "../lib/time.js";
import { errorBox, labelsOf, targetSummary, triggerSummary } from "./common.js";

const PAGE_SIZE = 20;
const STATUSES = ["", "ACTIVE", "PAUSED", "COMPLETED"];

function parseLabels(text) {
  return text
    .split(/[\s,]+/)
    .map((item) => item.trim())
    .filter(Boolean)
    .map((item) => (item.includes(":") ? item : item.replace("=", ":")));
}

export function listView(root, { params, navigate }) {
  const state = {
    name: params.get("name") || "",
    label: params.get("label") || "",
    status: params.get("status") || "",
    page: Math.max(1, Number(params.get("page")) || 1),
  };
  const search = h("input", {
    type: "search",
    placeholder: "Name starts with…",
    value: state.name,
    "aria-label": "Search by name",
    "data-testid": "search",
  });
  const labels = h("input", {
    type: "search",
    placeholder: "Labels, e.g. team:data env:prod",
    value: state.label,
    "aria-label": "Filter by labels",
    "data-testid": "label-filter",
  });
  const status = h(
    "select",
    { "aria-label": "Filter by status", "data-testid": "status-filter" },
    STATUSES.map((s) => h("option", { value: s, selected: s === state.status }, s ? s.toLowerCase() : "any status")),
  );
  const body = h("div", { class: "list-body" }, h("p", { class: "muted" }, "Loading…"));
  const canEdit = session()?.canEdit;

  function go(changes) {
    Object.assign(state, changes);
    const query = new URLSearchParams();
    for (const key of ["name", "label", "status"]) if (state[key]) query.set(key, state[key]);
    if (state.page > 1) query.set("page", String(state.page));
    const hash = `#/schedules${query.size ? `?${query}` : ""}`;
    if (location.hash !== hash) history.replaceState(null, "", hash);
    load();
  }

  const refilter = debounce(() => go({ name: search.value.trim(), label: labels.value.trim(), page: 1 }), 300);
  search.addEventListener("input", refilter);
  labels.addEventListener("input", refilter);
  status.addEventListener("change", () => go({ status: status.value, page: 1 }));

  let generation = 0;
  async function load() {
    const mine = ++generation;
    // The API filters on enabled; ACTIVE and COMPLETED (both enabled) are told apart on this page.
    const enabled = state.status === "PAUSED" ? false : state.status ? true : undefined;
    try {
      const { data } = await api("/schedules", {
        query: { name: state.name, label: parseLabels(state.label), enabled, page: state.page, pageSize: PAGE_SIZE },
      });
      if (mine !== generation) return;
      const items = state.status ? data.items.filter((s) => s.status === state.status) : data.items;
      body.replaceChildren(table(items), pager(data));
    } catch (err) {
      if (mine === generation) body.replaceChildren(errorBox(err));
    }
  }

  function table(items) {
    if (!items.length) {
      return h("div", { class: "empty", "data-testid": "empty" }, "No schedules match.", canEdit ? h("a", { href: "#/new" }, " Create one.") : null);
    }
    return h(
      "table",
      { class: "table", "data-testid": "schedules" },
      h(
        "thead",
        {},
        h("tr", {}, ["Name", "Status", "Trigger", "Target", "Next run", "Labels"].map((t) => h("th", {}, t))),
      ),
      h(
        "tbody",
        {},
        items.map((s) =>
          h(
            "tr",
            { "data-testid": "schedule-row", dataset: { id: s.id } },
            h("td", {}, h("a", { href: `#/schedules/${s.id}`, class: "strong" }, s.name), s.description ? h("div", { class: "muted small" }, s.description) : null),
            h("td", {}, badge(s.status)),
            h("td", { class: "mono small" }, triggerSummary(s.trigger), h("div", { class: "muted" }, s.tz)),
            h("td", { class: "small" }, targetSummary(s.target)),
            h(
              "td",
              { class: "small" },
              s.nextRunAt ? [formatLocal(new Date(s.nextRunAt), s.tz), h("div", { class: "muted" }, fromNow(new Date(s.nextRunAt)))] : h("span", { class: "muted" }, "—"),
            ),
            h(
              "td",
              {},
              labelsOf(s.labels).map((chip) => {
                chip.classList.add("clickable");
                chip.addEventListener("click", () => {
                  const value = chip.title;
                  const current = parseLabels(labels.value);
                  if (!current.includes(value)) labels.value = [...current, value].join(" ");
                  go({ label: labels.value, page: 1 });
                });
                return chip;
              }),
            ),
          ),
        ),
      ),
    );
  }

  function pager(page) {
    const pages = Math.max(1, Math.ceil(page.total / page.pageSize));
    const first = page.total ? (page.page - 1) * page.pageSize + 1 : 0;
    const last = Math.min(page.total, page.page * page.pageSize);
    return h(
      "div",
      { class: "pager" },
      h("span", { class: "muted", "data-testid": "total" }, `${first}–${last} of ${page.total}`),
      h("button", { disabled: page.page <= 1, onclick: () => go({ page: page.page - 1 }) }, "‹ Previous"),
      h("span", { class: "muted" }, `page ${page.page} of ${pages}`),
      h("button", { disabled: page.page >= pages, onclick: () => go({ page: page.page + 1 }) }, "Next ›"),
    );
  }

  root.replaceChildren(
    h(
      "section",
      {},
      h(
        "div",
        { class: "page-head" },
        h("h1", {}, "Schedules"),
        canEdit ? h("a", { class: "button primary", href: "#/new", "data-testid": "new-schedule" }, "+ New schedule") : null,
      ),
      h("div", { class: "toolbar" }, search, labels, status),
      body,
    ),
  );
  load();
  void navigate;
  return { dispose: () => refilter.cancel() };
}
