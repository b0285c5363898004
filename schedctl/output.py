"""Tables for people, JSON for programs (``--json``)."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from typing import Any, TextIO

Column = tuple[str, Callable[[dict[str, Any]], Any]]

SCHEDULE_COLUMNS: list[Column] = [
    ("ID", lambda s: s.get("id")),
    ("NAME", lambda s: s.get("name")),
    ("STATUS", lambda s: s.get("status")),
    ("TRIGGER", lambda s: describe_trigger(s.get("trigger") or {})),
    ("TZ", lambda s: s.get("tz")),
    ("TARGET", lambda s: (s.get("target") or {}).get("kind")),
    ("NEXT RUN", lambda s: s.get("nextRunAt") or "-"),
]

RUN_COLUMNS: list[Column] = [
    ("ID", lambda r: r.get("id")),
    ("SCHEDULED FOR", lambda r: r.get("scheduledFor")),
    ("STATUS", lambda r: r.get("status")),
    ("ATTEMPT", lambda r: r.get("attempt")),
    ("MS", lambda r: r.get("durationMs") if r.get("durationMs") is not None else "-"),
    ("ERROR", lambda r: (r.get("error") or "")[:60]),
]


def describe_trigger(trigger: dict[str, Any]) -> str:
    kind = trigger.get("type", "?")
    detail = {
        "CRON": trigger.get("cron"),
        "RRULE": trigger.get("rrule"),
        "FIXED_DELAY": f"every {trigger.get('delaySec')}s",
        "ONE_SHOT": trigger.get("startAt"),
    }.get(kind)
    return f"{kind} {detail}" if detail else kind


def table(rows: Sequence[dict[str, Any]], columns: Sequence[Column], out: TextIO = sys.stdout) -> None:
    cells = [[_cell(get(row)) for _, get in columns] for row in rows]
    widths = [max([len(title)] + [len(r[i]) for r in cells]) for i, (title, _) in enumerate(columns)]
    print("  ".join(title.ljust(w) for (title, _), w in zip(columns, widths, strict=True)).rstrip(), file=out)
    for r in cells:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip(), file=out)


def record(item: dict[str, Any], out: TextIO = sys.stdout) -> None:
    width = max((len(k) for k in item), default=0)
    for key, value in item.items():
        shown = json.dumps(value) if isinstance(value, dict | list) else _cell(value)
        print(f"{key.ljust(width)}  {shown}", file=out)


def as_json(value: Any, out: TextIO = sys.stdout) -> None:
    print(json.dumps(value, indent=2), file=out)


def _cell(value: Any) -> str:
    # Control characters from stored data would otherwise drive the user's terminal.
    text = "" if value is None else str(value)
    return "".join(ch if ch.isprintable() else f"\\x{ord(ch):02x}" for ch in text)
