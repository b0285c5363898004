import contextlib
import json
import logging
import sys

from loguru import logger
from opentelemetry.sdk.trace import TracerProvider

from shared.logs import setup_logging


def test_json_lines_carry_trace_and_run_fields(capsys):
    setup_logging("info", "json")
    try:
        tracer = TracerProvider().get_tracer("test")
        with tracer.start_as_current_span("work") as span:
            logger.bind(tenant_id="t1", schedule_id="s1", run_id="r1").info("delivered {}", 1)
            logging.getLogger("psycopg").warning("from the standard library")
        lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
        ours, stdlib = lines
        assert ours["message"] == "delivered 1" and ours["level"] == "info" and ours["time"]
        assert (ours["tenant_id"], ours["schedule_id"], ours["run_id"]) == ("t1", "s1", "r1")
        assert ours["trace_id"] == f"{span.get_span_context().trace_id:032x}" and ours["span_id"]
        assert stdlib["logger"] == "psycopg" and stdlib["level"] == "warning"
    finally:
        _restore_logging()


def _restore_logging() -> None:
    """Back to text lines on the real stderr: a sink left on capsys' stream fails once that stream is closed."""
    with contextlib.redirect_stderr(sys.__stderr__):
        setup_logging("info", "text")


def test_text_lines_escape_control_characters(capsys):
    setup_logging("info", "text")
    try:
        logger.info("GET {} done", "/x\n12:00:00.000 INFO    forged: admin logged in\x1b[2J")
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "\\n12:00:00" in err and "\\x1b[2J" in err
    finally:
        _restore_logging()
