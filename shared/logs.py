"""Logging: loguru for our code, the standard library's loggers (litestar, psycopg, aiohttp, nats) routed into it."""

from __future__ import annotations

import logging
import sys

from loguru import logger


class _Intercept(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        try:
            level: str | int = logger.level(record.levelname).name
        except ValueError:
            level = record.levelno
        logger.opt(depth=6, exception=record.exc_info).log(level, record.getMessage())


def setup_logging(level: str = "info", json: bool | None = None) -> None:
    json = (not sys.stderr.isatty()) if json is None else json
    logger.remove()
    logger.add(sys.stderr, level=level.upper(), serialize=json, backtrace=False, diagnose=False)
    logging.basicConfig(handlers=[_Intercept()], level=level.upper(), force=True)
