// One schedule: its settings, its next fire times on a timeline with DST changes, its runs; and for editors
// pause/resume, run now, edit and delete.

import { api } from "../lib/api.js";
import { badge, h } from "../lib/dom.js";
import { session } from "../lib/session.js";
import { formatDuration, formatLocal, fromNow } from "../lib/time.js";
import { errorBox, flash, labelsOf, problemText, targetSummary, triggerSummary } from "./common.js";
import { timeline } from "./timeline.js";

const COUNTS = [10, 30, 100];
const ACTIVE_RUNS = new Set(["PENDING", "RETRYING"]);
const RUN_STATUSES = ["", "PENDING", "RETRYING", "SUCCEEDED", "FAILED", "CANCELLED"];

function lagOf(run) {
  if (!run.startedAt) return null;
  return new Date(run.startedAt) - new Date(run.scheduledFor);
}

export function detailView(root, { id, navigate }) {
  const canEdit = session()?.canEdit;
  const state = { schedule: null, etag: null, count: 30, runStatus: "", runsPage: 1, timer: null, disposed: false };
  const head = h("div", { class: "page-head" }, h("h1", {}, "Schedule"));
  const meta = h("div", { class: "card" }, h("p", { class: "muted" }, "Loading…"));
  const preview = h("div", { "data-testid": "preview" });
  const runs = h("div", { "data-testid": "runs" });
  const countSelect = h(
    "select",
    { "aria-label": "Number of fire times", "data-testid": "preview-count" },
    COUNTS.map((n) => h("option", { value: n, selected: n === state.count }, `next ${n}`)),
  );
  countSelect.addEventListener("change", () => {
    state.count = Number(countSelect.value);
    loadPreview();
  });
  const runFilter = h(
    "select",
    { "aria-label": "Filter runs by status", "data-testid": "run-status-filter" },
    RUN_STATUSES.map((s) => h("option", { value: s }, s ? s.toLowerCase() : "any status")),
  );
  runFilter.addEventListener("change", () => {
    state.runStatus = runFilter.value;
    state.runsPage = 1;
    loadRuns();
  });

  const dialog = h("dialog", { class: "dialog", "data-testid": "confirm-delete" });

  async function load() {
    try {
      const { data, etag } = await api(`/schedules/${encodeURIComponent(id)}`);
      state.schedule = data;
      state.etag = etag;
      render();
      loadPreview();
    } catch (err) {
      head.replaceChildren(h("h1", {}, err.status === 404 ? "Schedule not found" : "Schedule"));
      meta.replaceChildren(errorBox(err), h("a", { href: "#/schedules" }, "‹ Back to schedules"));
      preview.replaceChildren();
      runs.replaceChildren();
    }
  }

  async function loadPreview() {
    try {
      const { data } = await api(`/schedules/${encodeURIComponent(id)}/preview`, { query: { count: state.count } });
      preview.replaceChildren(timeline(data.fireTimes, state.schedule.tz, { emptyText: "No upcoming fire times (paused, finished, or waiting for a run)." }));
    } catch (err) {
      preview.replaceChildren(errorBox(err));
    }
  }

  async function loadRuns() {
    clearTimeout(state.timer);
    try {
      const { data } = await api(`/schedules/${encodeURIComponent(id)}/runs`, {
        query: { status: state.runStatus, page: state.runsPage, pageSize: 20 },
      });
      if (state.disposed) return;
      runs.replaceChildren(runTable(data));
      // Follow runs still on their way (PENDING/RETRYING) until they settle.
      if (data.items.some((r) => ACTIVE_RUNS.has(r.status))) state.timer = setTimeout(loadRuns, 1500);
    } catch (err) {
      if (!state.disposed) runs.replaceChildren(errorBox(err));
    }
  }

  function runTable(page) {
    if (!page.items.length) return h("p", { class: "muted", "data-testid": "no-runs" }, "No runs yet.");
    const tz = state.schedule?.tz || "UTC";
    const pages = Math.max(1, Math.ceil(page.total / page.pageSize));
    return h(
      "div",
      {},
      h(
        "table",
        { class: "table compact" },
        h(
          "thead",
          {},
          h("tr", {}, ["Scheduled for", "Status", "Attempts", "Lag", "Duration", "HTTP", "Error"].map((t) => h("th", {}, t))),
        ),
        h(
          "tbody",
          {},
          page.items.map((run) =>
            h(
              "tr",
              { "data-testid": "run-row", dataset: { id: run.id, status: run.status } },
              h("td", {}, formatLocal(new Date(run.scheduledFor), tz, { seconds: true }), run.manual ? h("span", { class: "chip" }, "manual") : null),
              h("td", {}, badge(run.status)),
              h("td", { class: "num" }, String(run.attempt)),
              h("td", { class: "num", title: "from scheduled time to delivery start" }, formatDuration(lagOf(run))),
              h("td", { class: "num" }, run.durationMs === null ? "" : formatDuration(run.durationMs)),
              h("td", { class: "num" }, run.httpStatus ?? ""),
              h("td", { class: "error-cell", title: run.error || "" }, run.error || ""),
            ),
          ),
        ),
      ),
      h(
        "div",
        { class: "pager" },
        h("span", { class: "muted" }, `${page.total} run(s)`),
        h("button", { disabled: page.page <= 1, onclick: () => ((state.runsPage -= 1), loadRuns()) }, "‹ Newer"),
        h("button", { disabled: page.page >= pages, onclick: () => ((state.runsPage += 1), loadRuns()) }, "Older ›"),
      ),
    );
  }

  async function act(label, fn) {
    try {
      await fn();
    } catch (err) {
      if (err.status === 412) {
        flash("Someone else changed this schedule meanwhile; it was reloaded. Try again.", "error");
        load();
      } else {
        flash(`${label} failed: ${problemText(err)}`, "error");
      }
    }
  }

  function setEnabled(enabled) {
    return act(enabled ? "Resume" : "Pause", async () => {
      const { data, etag } = await api(`/schedules/${encodeURIComponent(id)}`, { method: "PATCH", body: { enabled }, ifMatch: state.etag });
      state.schedule = data;
      state.etag = etag;
      render();
      loadPreview();
      flash(enabled ? "Schedule resumed." : "Schedule paused.");
    });
  }

  function runNow() {
    return act("Run now", async () => {
      await api(`/schedules/${encodeURIComponent(id)}/run`, { method: "POST" });
      flash("Run queued; it appears below and updates as it is delivered.");
      state.runStatus = "";
      runFilter.value = "";
      state.runsPage = 1;
      loadRuns();
    });
  }

  function confirmDelete() {
    const s = state.schedule;
    dialog.replaceChildren(
      h(
        "form",
        { method: "dialog" },
        h("h2", {}, "Delete schedule?"),
        h("p", {}, "“", h("strong", {}, s.name), "” will stop firing and its pending runs are cancelled. This cannot be undone."),
        h(
          "div",
          { class: "actions" },
          h("button", { value: "cancel", "data-testid": "cancel-delete" }, "Cancel"),
          h("button", { value: "delete", class: "danger", "data-testid": "confirm-delete-button" }, "Delete"),
        ),
      ),
    );
    dialog.onclose = () => {
      if (dialog.returnValue !== "delete") return;
      act("Delete", async () => {
        await api(`/schedules/${encodeURIComponent(id)}`, { method: "DELETE" });
        flash(`Schedule “${s.name}” deleted.`);
        navigate("#/schedules");
      });
    };
    dialog.showModal();
  }

  function render() {
    const s = state.schedule;
    const controls = canEdit
      ? h(
          "div",
          { class: "actions", "data-testid": "write-controls" },
          h("button", { class: "primary", onclick: runNow, "data-testid": "run-now" }, "▶ Run now"),
          s.enabled
            ? h("button", { onclick: () => setEnabled(false), "data-testid": "pause" }, "Pause")
            : h("button", { onclick: () => setEnabled(true), "data-testid": "resume" }, "Resume"),
          h("a", { class: "button", href: `#/schedules/${s.id}/edit`, "data-testid": "edit" }, "Edit"),
          h("button", { class: "danger", onclick: confirmDelete, "data-testid": "delete" }, "Delete"),
        )
      : h("span", { class: "muted small", "data-testid": "read-only" }, "read-only (viewer)");
    head.replaceChildren(
      h("div", {}, h("a", { href: "#/schedules", class: "muted small" }, "‹ Schedules"), h("h1", { "data-testid": "schedule-name" }, s.name, " ", badge(s.status))),
      controls,
    );
    const row = (term, ...value) => [h("dt", {}, term), h("dd", {}, ...value)];
    meta.replaceChildren(
      h("p", { hidden: !s.description }, s.description || ""),
      h(
        "dl",
        { class: "meta" },
        row("Trigger", h("span", { class: "mono" }, triggerSummary(s.trigger))),
        row("Time zone", s.tz),
        row("Target", h("span", { class: "mono" }, targetSummary(s.target))),
        row("Next run", s.nextRunAt ? `${formatLocal(new Date(s.nextRunAt), s.tz, { seconds: true })} (${fromNow(new Date(s.nextRunAt))})` : "—"),
        row("Last run", s.lastRunAt ? `${formatLocal(new Date(s.lastRunAt), s.tz, { seconds: true })} (${fromNow(new Date(s.lastRunAt))})` : "—"),
        row("Misfires", `${s.misfirePolicy}${s.misfirePolicy === "CATCH_UP" ? ` (up to ${s.catchUpLimit})` : ""}`),
        row("Retries", `${s.retry.maxAttempts} attempt(s), backoff ${s.retry.backoffSec} s up to ${s.retry.maxBackoffSec} s`),
        row("Labels", labelsOf(s.labels).length ? labelsOf(s.labels) : h("span", { class: "muted" }, "none")),
        row("Version", String(s.version), h("span", { class: "muted small" }, ` · updated ${formatLocal(new Date(s.updatedAt), s.tz)}`)),
        row("Id", h("span", { class: "mono small" }, s.id)),
      ),
    );
  }

  root.replaceChildren(
    h(
      "section",
      {},
      head,
      meta,
      h(
        "div",
        { class: "card" },
        h(
          "div",
          { class: "card-head" },
          h("h2", {}, "Runs"),
          h("div", { class: "actions" }, runFilter, h("button", { onclick: loadRuns, "data-testid": "refresh-runs" }, "Refresh")),
        ),
        runs,
      ),
      h("div", { class: "card" }, h("div", { class: "card-head" }, h("h2", {}, "Next fire times"), countSelect), preview),
      dialog,
    ),
  );
  load();
  loadRuns();
  return {
    dispose() {
      state.disposed = true;
      clearTimeout(state.timer);
      if (dialog.open) dialog.close();
    },
  };
}
