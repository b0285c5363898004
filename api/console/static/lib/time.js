// Time zone arithmetic with Intl only: UTC offsets of instants in a zone, DST transitions between fire times,
// wall times in a zone to instants and back, and human-friendly durations.

const offsetFormats = new Map();

function offsetFormat(tz) {
  if (!offsetFormats.has(tz)) {
    offsetFormats.set(tz, new Intl.DateTimeFormat("en-US", { timeZone: tz, timeZoneName: "longOffset" }));
  }
  return offsetFormats.get(tz);
}

export function isZone(tz) {
  try {
    offsetFormat(tz);
    return true;
  } catch {
    return false;
  }
}

/** The zone's UTC offset at ``date``, in minutes east of UTC. */
export function offsetMinutes(date, tz) {
  const name = offsetFormat(tz).formatToParts(date).find((p) => p.type === "timeZoneName")?.value || "GMT";
  const match = /GMT([+-])(\d{1,2})(?::?(\d{2}))?/.exec(name);
  if (!match) return 0;
  const minutes = Number(match[2]) * 60 + Number(match[3] || 0);
  return match[1] === "-" ? -minutes : minutes;
}

export function offsetLabel(minutes) {
  const sign = minutes < 0 ? "-" : "+";
  const abs = Math.abs(minutes);
  return `UTC${sign}${String(Math.floor(abs / 60)).padStart(2, "0")}:${String(abs % 60).padStart(2, "0")}`;
}

/** The first whole minute in (lo, hi] whose offset differs from ``fromOffset`` (zones change on minutes). */
function transitionBetween(lo, hi, tz, fromOffset) {
  let a = Math.floor(lo.getTime() / 60_000);
  let b = Math.ceil(hi.getTime() / 60_000);
  while (b - a > 1) {
    const mid = a + Math.floor((b - a) / 2);
    if (offsetMinutes(new Date(mid * 60_000), tz) === fromOffset) a = mid;
    else b = mid;
  }
  return new Date(b * 60_000);
}

/**
 * Where the zone's UTC offset changes between consecutive fire times: [{index, from, to, at}], ``index`` being
 * the first fire time after the change. (Two changes between the same two fire times cancel out unseen.)
 */
export function dstTransitions(times, tz) {
  const found = [];
  for (let i = 1; i < times.length; i += 1) {
    const from = offsetMinutes(times[i - 1], tz);
    const to = offsetMinutes(times[i], tz);
    if (from !== to) found.push({ index: i, from, to, at: transitionBetween(times[i - 1], times[i], tz, from) });
  }
  return found;
}

export function formatLocal(date, tz, { seconds = false, weekday = true } = {}) {
  return new Intl.DateTimeFormat("en-GB", {
    timeZone: tz,
    weekday: weekday ? "short" : undefined,
    year: "numeric",
    month: "short",
    day: "2-digit",
    hour: "2-digit",
    minute: "2-digit",
    second: seconds ? "2-digit" : undefined,
    hourCycle: "h23",
  }).format(date);
}

export function formatShortDate(date, tz, { year = false } = {}) {
  return new Intl.DateTimeFormat("en-GB", { timeZone: tz, year: year ? "numeric" : undefined, month: "short", day: "numeric" }).format(date);
}

export function formatTime(date, tz) {
  return new Intl.DateTimeFormat("en-GB", { timeZone: tz, hour: "2-digit", minute: "2-digit", hourCycle: "h23" }).format(date);
}

export function formatDuration(ms) {
  if (ms === null || ms === undefined || Number.isNaN(ms)) return "";
  const abs = Math.abs(ms);
  const sign = ms < 0 ? "-" : "";
  if (abs < 1000) return `${sign}${Math.round(abs)} ms`;
  if (abs < 60_000) return `${sign}${(abs / 1000).toFixed(abs < 10_000 ? 2 : 1)} s`;
  if (abs < 3_600_000) return `${sign}${Math.floor(abs / 60_000)} min ${Math.round((abs % 60_000) / 1000)} s`;
  if (abs < 86_400_000) return `${sign}${Math.floor(abs / 3_600_000)} h ${Math.round((abs % 3_600_000) / 60_000)} min`;
  return `${sign}${(abs / 86_400_000).toFixed(1)} d`;
}

const relative = new Intl.RelativeTimeFormat("en", { numeric: "auto" });

export function fromNow(date, now = new Date()) {
  const sec = (date.getTime() - now.getTime()) / 1000;
  const steps = [
    [60, "second"],
    [3600, "minute", 60],
    [86400, "hour", 3600],
    [86400 * 30, "day", 86400],
    [86400 * 365, "month", 86400 * 30],
    [Infinity, "year", 86400 * 365],
  ];
  for (const [limit, unit, size = 1] of steps) {
    if (Math.abs(sec) < limit) return relative.format(Math.round(sec / size), unit);
  }
  return "";
}

/** "2027-03-28T09:30" (as a datetime-local input holds it) of ``date`` in ``tz``. */
export function toWall(date, tz) {
  const parts = Object.fromEntries(
    new Intl.DateTimeFormat("en-CA", {
      timeZone: tz,
      year: "numeric",
      month: "2-digit",
      day: "2-digit",
      hour: "2-digit",
      minute: "2-digit",
      second: "2-digit",
      hourCycle: "h23",
    })
      .formatToParts(date)
      .map((p) => [p.type, p.value]),
  );
  const sec = parts.second === "00" ? "" : `:${parts.second}`;
  return `${parts.year}-${parts.month}-${parts.day}T${parts.hour}:${parts.minute}${sec}`;
}

/** The instant a wall time in ``tz`` names; in a gap the later offset applies, in an overlap the first one. */
export function fromWall(wall, tz) {
  const match = /^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2})(?::(\d{2}))?$/.exec(wall);
  if (!match) return null;
  const [, y, mo, d, hh, mm, ss] = match.map((v) => (v === undefined ? 0 : Number(v)));
  const asUtc = Date.UTC(y, mo - 1, d, hh, mm, ss || 0);
  const candidates = new Set([offsetMinutes(new Date(asUtc - 86_400_000), tz), offsetMinutes(new Date(asUtc + 86_400_000), tz)]);
  const exact = [...candidates]
    .map((off) => new Date(asUtc - off * 60_000))
    .filter((instant) => toWall(instant, tz).slice(0, 16) === wall.slice(0, 16))
    .sort((a, b) => a - b);
  if (exact.length) return exact[0];
  return new Date(asUtc - Math.min(...candidates) * 60_000); // a wall time skipped by the clocks
}

export function zones() {
  try {
    return ["UTC", ...Intl.supportedValuesOf("timeZone").filter((z) => z !== "UTC")];
  } catch {
    return ["UTC", "Europe/Berlin", "Europe/London", "America/New_York", "Asia/Tokyo"];
  }
}
