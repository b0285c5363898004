// Create or edit a schedule. The trigger is checked and previewed as you type (POST /triggers/preview); the
// API's field errors (problem+json `errors`) are shown next to the fields they name.

import { api } from "../lib/api.js";
import { debounce, h } from "../lib/dom.js";
import { fromWall, isZone, toWall, zones } from "../lib/time.js";
import { errorBox, flash, problemText } from "./common.js";
import { timeline } from "./timeline.js";

const PREVIEW_COUNT = 12;
const TRIGGER_TYPES = { CRON: "CRON expression", RRULE: "RRULE (RFC 5545)", FIXED_DELAY: "Fixed delay", ONE_SHOT: "Once" };
const TARGET_KINDS = { EVENT: "NATS event", HTTP: "HTTP request", QUEUE: "Queue (JetStream)" };
const DEFAULTS = {
  name: "",
  description: "",
  tz: Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC",
  trigger: { type: "CRON", cron: "0 9 * * 1-5" },
  target: { kind: "EVENT", eventTopic: "" },
  payload: null,
  enabled: true,
  misfirePolicy: "FIRE_ONCE",
  catchUpLimit: 100,
  retry: { maxAttempts: 3, backoffSec: 1, maxBackoffSec: 60 },
  labels: {},
};

function json(value) {
  return value === null || value === undefined ? "" : JSON.stringify(value, null, 2);
}

export function formView(root, { id, navigate }) {
  const editing = Boolean(id);
  const inputs = new Map(); // wire path -> input element
  const errors = new Map(); // wire path -> error element
  const general = h("div", { class: "alert alert-error", hidden: true, "data-testid": "form-error" });
  const previewBox = h("div", { class: "preview-box", "data-testid": "live-preview" }, h("p", { class: "muted" }, "Type a trigger to see its next fire times."));
  let version = null;

  function field(path, label, input, hint) {
    inputs.set(path, input);
    input.name = path;
    input.id = `f-${path.replace(/\W/g, "-")}`;
    input.dataset.testid = `field-${path}`;
    const error = h("div", { class: "field-error", "data-error-for": path, "data-testid": `error-${path}`, hidden: true });
    errors.set(path, error);
    return h("div", { class: "field", dataset: { field: path } }, h("label", { for: input.id }, label), input, hint ? h("div", { class: "hint" }, hint) : null, error);
  }
  const text = (attrs = {}) => h("input", { type: "text", autocomplete: "off", spellcheck: "false", ...attrs });
  const number = (attrs = {}) => h("input", { type: "number", ...attrs });
  const area = (rows, attrs = {}) => h("textarea", { rows, spellcheck: "false", ...attrs });
  const select = (options) => h("select", {}, Object.entries(options).map(([v, t]) => h("option", { value: v }, t)));
  const value = (path) => inputs.get(path).value;

  const zoneList = h("datalist", { id: "zones" }, zones().map((z) => h("option", { value: z })));
  const triggerType = select(TRIGGER_TYPES);
  const targetKind = select(TARGET_KINDS);
  const method = select({ POST: "POST", GET: "GET", PUT: "PUT", PATCH: "PATCH", DELETE: "DELETE" });
  const misfire = select({ FIRE_ONCE: "Fire once for all missed", SKIP: "Skip missed", CATCH_UP: "Catch up each missed" });
  const enabled = h("input", { type: "checkbox" });
  const follow = h("input", { type: "checkbox" });

  const sections = {
    basics: h(
      "fieldset",
      {},
      h("legend", {}, "Schedule"),
      field("name", "Name", text({ required: true, maxlength: 200, placeholder: "nightly-report" })),
      field("description", "Description", text({ placeholder: "optional" })),
      field("labels", "Labels", area(2, { placeholder: "team=data\nenv=prod" }), "One key=value per line."),
      h("label", { class: "check" }, enabled, " Enabled"),
    ),
    when: h(
      "fieldset",
      {},
      h("legend", {}, "When"),
      field("tz", "Time zone", text({ list: "zones", required: true, placeholder: "Europe/Berlin" }), "IANA zone the trigger's wall times are in."),
      field("trigger.type", "Trigger", triggerType),
      field("trigger.cron", "CRON expression", text({ placeholder: "30 2 * * *" }), "minute hour day-of-month month day-of-week (5 fields; @daily etc. allowed)"),
      field("trigger.rrule", "RRULE", area(3, { placeholder: "FREQ=WEEKLY;BYDAY=MO;BYHOUR=9" })),
      field("trigger.delaySec", "Delay (seconds)", number({ min: 1, step: 1 }), "Counted from when the previous run finished."),
      field("trigger.startAt", "Start at", h("input", { type: "datetime-local", step: 1 }), "Wall time in the schedule's time zone."),
      field("trigger.endAt", "End at", h("input", { type: "datetime-local", step: 1 }), "Optional."),
    ),
    target: h(
      "fieldset",
      {},
      h("legend", {}, "Target"),
      field("target.kind", "Deliver to", targetKind),
      field("target.eventTopic", "NATS subject", text({ placeholder: "reports.daily.generate" })),
      field("target.queue.topic", "Queue topic", text({ placeholder: "jobs.reports" })),
      field("target.http.url", "URL", text({ type: "url", placeholder: "https://hooks.example.com/run" })),
      field("target.http.method", "Method", method),
      field("target.http.headers", "Headers (JSON object)", area(2, { placeholder: '{"X-Team": "data"}' })),
      field("target.http.secretHeaders", "Secret headers (JSON object)", area(2, { placeholder: '{"Authorization": "Bearer …"}' }), "Sealed at rest and shown masked; leave a masked value as it is to keep it."),
      field("target.http.body", "Body (JSON)", area(2)),
      field("target.http.timeoutSec", "Timeout (seconds)", number({ min: 0.1, step: 0.1 })),
      h("label", { class: "check" }, follow, " Follow redirects (each hop is checked again)"),
      field("payload", "Payload (JSON)", area(3, { placeholder: '{"report": "daily"}' }), "Sent with every run."),
    ),
    delivery: h(
      "fieldset",
      {},
      h("legend", {}, "Delivery"),
      field("misfirePolicy", "Missed occurrences", misfire),
      field("catchUpLimit", "Catch-up limit", number({ min: 0, step: 1 })),
      field("retry.maxAttempts", "Max attempts", number({ min: 1, step: 1 })),
      field("retry.backoffSec", "Backoff (seconds)", number({ min: 0, step: 0.1 })),
      field("retry.maxBackoffSec", "Max backoff (seconds)", number({ min: 0, step: 0.1 })),
    ),
  };

  function showFor(prefix, visible) {
    for (const [path, input] of inputs) if (path.startsWith(prefix)) input.closest(".field").hidden = !visible;
  }

  function arrange() {
    const t = triggerType.value;
    showFor("trigger.cron", t === "CRON");
    showFor("trigger.rrule", t === "RRULE");
    showFor("trigger.delaySec", t === "FIXED_DELAY");
    const k = targetKind.value;
    showFor("target.eventTopic", k === "EVENT");
    showFor("target.queue.", k === "QUEUE");
    showFor("target.http.", k === "HTTP");
    follow.closest("label").hidden = k !== "HTTP";
    showFor("catchUpLimit", misfire.value === "CATCH_UP");
  }

  function fill(s) {
    inputs.get("name").value = s.name;
    inputs.get("description").value = s.description || "";
    inputs.get("labels").value = Object.entries(s.labels || {}).map(([k, v]) => `${k}=${v}`).join("\n");
    enabled.checked = s.enabled;
    inputs.get("tz").value = s.tz;
    triggerType.value = s.trigger.type;
    inputs.get("trigger.cron").value = s.trigger.cron || "";
    inputs.get("trigger.rrule").value = s.trigger.rrule || "";
    inputs.get("trigger.delaySec").value = s.trigger.delaySec ?? "";
    inputs.get("trigger.startAt").value = s.trigger.startAt ? toWall(new Date(s.trigger.startAt), s.tz) : "";
    inputs.get("trigger.endAt").value = s.trigger.endAt ? toWall(new Date(s.trigger.endAt), s.tz) : "";
    targetKind.value = s.target.kind;
    inputs.get("target.eventTopic").value = s.target.eventTopic || "";
    inputs.get("target.queue.topic").value = s.target.queue?.topic || "";
    const http = s.target.http || {};
    inputs.get("target.http.url").value = http.url || "";
    method.value = http.method || "POST";
    inputs.get("target.http.headers").value = Object.keys(http.headers || {}).length ? json(http.headers) : "";
    inputs.get("target.http.secretHeaders").value = Object.keys(http.secretHeaders || {}).length ? json(http.secretHeaders) : "";
    inputs.get("target.http.body").value = json(http.body);
    inputs.get("target.http.timeoutSec").value = http.timeoutSec ?? 10;
    follow.checked = Boolean(http.followRedirects);
    inputs.get("payload").value = json(s.payload);
    misfire.value = s.misfirePolicy;
    inputs.get("catchUpLimit").value = s.catchUpLimit;
    inputs.get("retry.maxAttempts").value = s.retry.maxAttempts;
    inputs.get("retry.backoffSec").value = s.retry.backoffSec;
    inputs.get("retry.maxBackoffSec").value = s.retry.maxBackoffSec;
    arrange();
  }

  // --- reading the form: local problems are collected like the API's, as {field, reason} ----------------
  function parseJson(path, fallback, problems, { object = false } = {}) {
    const raw = value(path).trim();
    if (!raw) return fallback;
    try {
      const parsed = JSON.parse(raw);
      if (object && (typeof parsed !== "object" || parsed === null || Array.isArray(parsed))) {
        problems.push({ field: path, reason: "must be a JSON object" });
        return fallback;
      }
      return parsed;
    } catch (err) {
      problems.push({ field: path, reason: `not valid JSON: ${err.message}` });
      return fallback;
    }
  }

  function numberAt(path, problems) {
    const raw = value(path).trim();
    if (raw === "") return undefined;
    const n = Number(raw);
    if (!Number.isFinite(n)) problems.push({ field: path, reason: "must be a number" });
    return n;
  }

  function instantAt(path, tz, problems) {
    const raw = value(path).trim();
    if (!raw) return undefined;
    if (!isZone(tz)) return undefined;
    const instant = fromWall(raw, tz);
    if (!instant) problems.push({ field: path, reason: "is not a date and time" });
    return instant ? instant.toISOString() : undefined;
  }

  function readTrigger(problems) {
    const tz = value("tz").trim();
    const type = triggerType.value;
    const trigger = { type };
    if (type === "CRON") trigger.cron = value("trigger.cron").trim();
    if (type === "RRULE") trigger.rrule = value("trigger.rrule").trim();
    if (type === "FIXED_DELAY") {
      const delay = numberAt("trigger.delaySec", problems);
      if (delay === undefined) problems.push({ field: "trigger.delaySec", reason: "is required" });
      else if (!Number.isInteger(delay)) problems.push({ field: "trigger.delaySec", reason: "must be a whole number of seconds" });
      trigger.delaySec = delay;
    }
    const startAt = instantAt("trigger.startAt", tz, problems);
    const endAt = instantAt("trigger.endAt", tz, problems);
    if (startAt) trigger.startAt = startAt;
    if (endAt) trigger.endAt = endAt;
    if (type === "ONE_SHOT" && !startAt) problems.push({ field: "trigger.startAt", reason: "is required for a one-shot trigger" });
    return { tz, trigger };
  }

  function readLabels(problems) {
    const labels = {};
    for (const line of value("labels").split("\n")) {
      if (!line.trim()) continue;
      const at = line.search(/[=:]/);
      if (at <= 0) {
        problems.push({ field: "labels", reason: `“${line.trim()}” is not key=value` });
        continue;
      }
      labels[line.slice(0, at).trim()] = line.slice(at + 1).trim();
    }
    return labels;
  }

  function readTarget(problems) {
    const kind = targetKind.value;
    if (kind === "EVENT") return { kind, eventTopic: value("target.eventTopic").trim() };
    if (kind === "QUEUE") return { kind, queue: { topic: value("target.queue.topic").trim() } };
    const http = { url: value("target.http.url").trim(), method: method.value, followRedirects: follow.checked };
    http.headers = parseJson("target.http.headers", {}, problems, { object: true });
    http.secretHeaders = parseJson("target.http.secretHeaders", {}, problems, { object: true });
    const body = parseJson("target.http.body", undefined, problems);
    if (body !== undefined) http.body = body;
    const timeout = numberAt("target.http.timeoutSec", problems);
    if (timeout !== undefined) http.timeoutSec = timeout;
    return { kind, http };
  }

  function readAll() {
    const problems = [];
    const { tz, trigger } = readTrigger(problems);
    const body = {
      name: value("name").trim(),
      description: value("description").trim() || null,
      tz,
      trigger,
      target: readTarget(problems),
      payload: parseJson("payload", null, problems),
      enabled: enabled.checked,
      misfirePolicy: misfire.value,
      labels: readLabels(problems),
      retry: {
        maxAttempts: numberAt("retry.maxAttempts", problems),
        backoffSec: numberAt("retry.backoffSec", problems),
        maxBackoffSec: numberAt("retry.maxBackoffSec", problems),
      },
    };
    const catchUp = numberAt("catchUpLimit", problems);
    if (catchUp !== undefined) body.catchUpLimit = catchUp;
    if (!body.name) problems.push({ field: "name", reason: "is required" });
    return { body, problems };
  }

  // --- showing problems next to their fields ----------------------------------------------------------
  function clearErrors(prefixes) {
    for (const [path, el] of errors) {
      if (!prefixes || prefixes.some((p) => path === p || path.startsWith(`${p}.`))) {
        el.hidden = true;
        el.textContent = "";
        inputs.get(path).removeAttribute("aria-invalid");
      }
    }
  }

  function placeOf(fieldPath) {
    // The API names the deepest field (target.http.headers.X-A, labels.team): show it at the nearest input.
    const parts = fieldPath.split(".");
    for (let n = parts.length; n > 0; n -= 1) {
      const candidate = parts.slice(0, n).join(".");
      if (errors.has(candidate)) return candidate;
    }
    if (fieldPath === "trigger") return `trigger.${{ CRON: "cron", RRULE: "rrule", FIXED_DELAY: "delaySec", ONE_SHOT: "startAt" }[triggerType.value]}`;
    return null;
  }

  function showErrors(list) {
    const unplaced = [];
    for (const problem of list) {
      const place = placeOf(problem.field);
      if (!place || inputs.get(place).closest(".field").hidden) {
        unplaced.push(problem);
        continue;
      }
      const el = errors.get(place);
      const reason = place === problem.field ? problem.reason : `${problem.field.slice(place.length + 1)}: ${problem.reason}`;
      el.textContent = el.textContent ? `${el.textContent}; ${reason}` : reason;
      el.hidden = false;
      inputs.get(place).setAttribute("aria-invalid", "true");
    }
    return unplaced;
  }

  // --- live preview -------------------------------------------------------------------------------------
  let previewGeneration = 0;
  const refreshPreview = debounce(async () => {
    const mine = ++previewGeneration;
    const problems = [];
    const { tz, trigger } = readTrigger(problems);
    clearErrors(["tz", "trigger"]);
    if (problems.length) {
      showErrors(problems);
      previewBox.replaceChildren(h("p", { class: "muted" }, "Fix the trigger to see its fire times."));
      return;
    }
    previewBox.classList.add("loading");
    try {
      const { data } = await api("/triggers/preview", { method: "POST", body: { trigger, tz, count: PREVIEW_COUNT } });
      if (mine !== previewGeneration) return;
      previewBox.replaceChildren(timeline(data.fireTimes, tz, { emptyText: "This trigger never fires (after now)." }));
    } catch (err) {
      if (mine !== previewGeneration) return;
      const unplaced = showErrors(err.fieldErrors);
      previewBox.replaceChildren(
        h("p", { class: "field-error", "data-testid": "preview-error" }, unplaced.length || !err.fieldErrors.length ? problemText(err) : "The trigger is not valid (see above)."),
      );
    } finally {
      if (mine === previewGeneration) previewBox.classList.remove("loading");
    }
  }, 350);

  for (const path of ["tz", "trigger.cron", "trigger.rrule", "trigger.delaySec", "trigger.startAt", "trigger.endAt"]) {
    inputs.get(path).addEventListener("input", refreshPreview);
  }
  triggerType.addEventListener("change", () => {
    arrange();
    refreshPreview();
  });
  targetKind.addEventListener("change", arrange);
  misfire.addEventListener("change", arrange);
  inputs.get("name").addEventListener("input", () => {
    clearErrors(["name"]);
    if (!value("name").trim()) showErrors([{ field: "name", reason: "is required" }]);
  });
  for (const path of ["payload", "target.http.headers", "target.http.secretHeaders", "target.http.body"]) {
    inputs.get(path).addEventListener("input", () => {
      clearErrors([path]);
      const problems = [];
      parseJson(path, null, problems, { object: path.endsWith("eaders") });
      showErrors(problems);
    });
  }

  // --- saving -------------------------------------------------------------------------------------------
  const submit = h("button", { type: "submit", class: "primary", "data-testid": "save" }, editing ? "Save changes" : "Create schedule");
  async function save(event) {
    event.preventDefault();
    general.hidden = true;
    clearErrors();
    const { body, problems } = readAll();
    if (problems.length) {
      const unplaced = showErrors(problems);
      general.textContent = unplaced.length ? unplaced.map((p) => `${p.field}: ${p.reason}`).join("; ") : "Please fix the highlighted fields.";
      general.hidden = false;
      return;
    }
    submit.disabled = true;
    try {
      const { data } = editing
        ? await api(`/schedules/${encodeURIComponent(id)}`, { method: "PATCH", body, ifMatch: `"${version}"` })
        : await api("/schedules", { method: "POST", body });
      flash(editing ? "Changes saved." : `Schedule “${data.name}” created.`);
      if (!editing && data.webhookSecret && data.target.kind === "HTTP") {
        flash(`Schedule created. Its webhook signing secret (shown once): ${data.webhookSecret}`);
      }
      navigate(`#/schedules/${data.id}`);
    } catch (err) {
      const unplaced = showErrors(err.fieldErrors);
      general.textContent =
        err.status === 412
          ? "Someone else changed this schedule since you opened it. Reload the page to see their version, then apply your change again."
          : unplaced.length || !err.fieldErrors.length
            ? problemText(err)
            : "The API refused some fields (see the messages next to them).";
      general.hidden = false;
    } finally {
      submit.disabled = false;
    }
  }

  const form = h(
    "form",
    { class: "schedule-form", novalidate: true, onsubmit: save, "data-testid": "schedule-form" },
    h(
      "div",
      { class: "form-main" },
      sections.basics,
      sections.when,
      sections.target,
      sections.delivery,
      zoneList,
      general,
      h("div", { class: "actions" }, submit, h("a", { class: "button", href: editing ? `#/schedules/${id}` : "#/schedules" }, "Cancel")),
    ),
    h("aside", { class: "form-side" }, h("div", { class: "card" }, h("h2", {}, "Next fire times"), previewBox)),
  );
  root.replaceChildren(
    h("section", {}, h("div", { class: "page-head" }, h("h1", {}, editing ? "Edit schedule" : "New schedule")), form),
  );

  if (editing) {
    api(`/schedules/${encodeURIComponent(id)}`)
      .then(({ data }) => {
        version = data.version;
        fill(data);
        refreshPreview();
      })
      .catch((err) => root.replaceChildren(errorBox(err)));
  } else {
    fill(DEFAULTS);
    refreshPreview();
  }
  return { dispose: () => refreshPreview.cancel() };
}
