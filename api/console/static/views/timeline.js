// The next fire times of a schedule on a time axis, with the zone's DST changes marked between them.

import { h, s } from "../lib/dom.js";
import { dstTransitions, formatLocal, formatShortDate, formatTime, offsetLabel, offsetMinutes } from "../lib/time.js";

const WIDTH = 1000;
const HEIGHT = 96;
const PAD = 28;
const AXIS_Y = 60;

function changeWords(from, to) {
  const hours = Math.abs(to - from) / 60;
  const amount = Number.isInteger(hours) ? `${hours} h` : `${Math.abs(to - from)} min`;
  return to > from ? `clocks go forward ${amount}` : `clocks go back ${amount}`;
}

function axis(times, transitions, tz) {
  const t0 = times[0].getTime();
  const t1 = times[times.length - 1].getTime();
  const short = t1 - t0 < 36 * 3600 * 1000; // within a day and a half the ends are told apart by the time
  const endLabel = (date) => (short ? formatTime(date, tz) : formatShortDate(date, tz, { year: true }));
  const x = (t) => (t1 === t0 ? WIDTH / 2 : PAD + ((t - t0) / (t1 - t0)) * (WIDTH - 2 * PAD));
  const svg = s(
    "svg",
    {
      viewBox: `0 0 ${WIDTH} ${HEIGHT}`,
      class: "timeline-axis",
      role: "img",
      "aria-label": `${times.length} fire times, ${transitions.length} DST change(s)`,
    },
    s("line", { x1: PAD / 2, x2: WIDTH - PAD / 2, y1: AXIS_Y, y2: AXIS_Y, class: "axis-line" }),
  );
  for (const change of transitions) {
    const cx = x(change.at.getTime());
    svg.append(
      s("line", { x1: cx, x2: cx, y1: 14, y2: HEIGHT - 8, class: "dst-line", "data-testid": "dst-line" }),
      s(
        "text",
        { x: cx, y: 10, class: "dst-label", "text-anchor": cx > WIDTH - 160 ? "end" : cx < 160 ? "start" : "middle" },
        `${formatShortDate(change.at, tz)}: ${offsetLabel(change.from)} → ${offsetLabel(change.to)}`,
      ),
    );
  }
  times.forEach((time, i) => {
    const summer = offsetMinutes(time, tz) !== offsetMinutes(times[0], tz);
    svg.append(
      s(
        "circle",
        { cx: x(time.getTime()), cy: AXIS_Y, r: 5, class: summer ? "fire fire-shifted" : "fire" },
        s("title", {}, `#${i + 1} ${formatLocal(time, tz)} (${offsetLabel(offsetMinutes(time, tz))})`),
      ),
    );
  });
  svg.append(
    s("text", { x: PAD / 2, y: HEIGHT - 4, class: "axis-label", "text-anchor": "start" }, endLabel(times[0])),
    s(
      "text",
      { x: WIDTH - PAD / 2, y: HEIGHT - 4, class: "axis-label", "text-anchor": "end" },
      endLabel(times[times.length - 1]),
    ),
  );
  return svg;
}

export function timeline(fireTimes, tz, { emptyText = "No upcoming fire times." } = {}) {
  const times = fireTimes.map((t) => new Date(t));
  if (!times.length) return h("p", { class: "muted", "data-testid": "timeline-empty" }, emptyText);
  const transitions = dstTransitions(times, tz);
  const byIndex = new Map(transitions.map((t) => [t.index, t]));
  const rows = [];
  times.forEach((time, i) => {
    const change = byIndex.get(i);
    if (change) {
      rows.push(
        h(
          "tr",
          { class: "dst-row", "data-testid": "dst-marker" },
          h(
            "td",
            { colspan: 4 },
            h("span", { class: "dst-icon", "aria-hidden": "true" }, "☀︎"),
            ` DST change on ${formatLocal(change.at, tz, { weekday: false })} (${tz}): ${changeWords(change.from, change.to)}, `,
            h("strong", {}, `${offsetLabel(change.from)} → ${offsetLabel(change.to)}`),
          ),
        ),
      );
    }
    rows.push(
      h(
        "tr",
        { "data-testid": "fire-time" },
        h("td", { class: "num" }, String(i + 1)),
        h("td", {}, formatLocal(time, tz)),
        h("td", { class: "muted" }, offsetLabel(offsetMinutes(time, tz))),
        h("td", { class: "muted mono utc" }, time.toISOString().replace(".000Z", "Z")),
      ),
    );
  });
  return h(
    "div",
    { class: "timeline", "data-testid": "timeline", dataset: { transitions: String(transitions.length) } },
    axis(times, transitions, tz),
    h(
      "p",
      { class: "muted small" },
      transitions.length
        ? `${transitions.length} DST change(s) in ${tz} within these ${times.length} fire times.`
        : `No DST change in ${tz} within these ${times.length} fire times.`,
    ),
    h(
      "table",
      { class: "table compact" },
      h("thead", {}, h("tr", {}, h("th", {}, "#"), h("th", {}, `Local time (${tz})`), h("th", {}, "Offset"), h("th", { class: "utc" }, "UTC"))),
      h("tbody", {}, rows),
    ),
  );
}
