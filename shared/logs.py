"""Logging: loguru for our code, the standard library's loggers (litestar, psycopg, aiohttp, nats) routed into it.

``json`` writes one compact JSON object per line (for log shippers); otherwise a human-readable line.
"""

from __future__ import annotations

import logging
import re
import sys
import traceback
from typing import Any

import msgspec
from loguru import logger
from opentelemetry import trace

_encode = msgspec.json.Encoder()


class _Intercept(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        try:
            level: str | int = logger.level(record.levelname).name
        except ValueError:
            level = record.levelno
        logger.bind(logger_name=record.name).opt(depth=6, exception=record.exc_info).log(level, record.getMessage())


def _json_sink(message: Any) -> None:
    record = message.record
    line: dict[str, Any] = {
        "time": record["time"].isoformat(),
        "level": record["level"].name.lower(),
        "message": record["message"],
        "logger": record["extra"].get("logger_name", record["name"]),
    }
    line.update({k: v for k, v in record["extra"].items() if k != "logger_name"})
    error = record["exception"]
    if error is not None:
        line["exception"] = "".join(traceback.format_exception(error.type, error.value, error.traceback))
    sys.stderr.write(_encode.encode(line).decode() + "\n")


def _with_trace(record: Any) -> None:
    """Put the active span's ids on every record, so a log line leads to its trace."""
    context = trace.get_current_span().get_span_context()
    if context.is_valid:
        record["extra"]["trace_id"] = f"{context.trace_id:032x}"
        record["extra"]["span_id"] = f"{context.span_id:016x}"


# Line breaks, terminal escapes and other C0/C1 controls: from a request they could forge log lines or drive the
# operator's terminal.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def escape_controls(text: str) -> str:
    return _CONTROL.sub(lambda match: match.group().encode("unicode_escape").decode("ascii"), text)


def _escaped_with_trace(record: Any) -> None:
    _with_trace(record)
    record["message"] = escape_controls(record["message"])


def setup_logging(level: str = "info", fmt: str = "") -> None:
    """``fmt``: "json", "text", or "" for JSON unless stderr is a terminal."""
    as_json = fmt == "json" or (fmt == "" and not sys.stderr.isatty())
    logger.remove()
    # JSON escapes every control character itself; a text line must do so before it is written.
    logger.configure(patcher=_with_trace if as_json else _escaped_with_trace)
    if as_json:
        logger.add(_json_sink, level=level.upper(), backtrace=False, diagnose=False)
    else:
        logger.add(
            sys.stderr,
            level=level.upper(),
            backtrace=False,
            diagnose=False,
            format="{time:HH:mm:ss.SSS} {level: <7} {name}: {message}",
        )
    logging.basicConfig(handlers=[_Intercept()], level=level.upper(), force=True)
    # Their INFO lines are per-connection noise.
    for noisy in ("uvicorn.access", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
