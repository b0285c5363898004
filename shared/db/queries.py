"""Loads ``queries.sql`` once into a mapping of statement name -> SQL text."""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

QUERIES_FILE = Path(__file__).with_name("queries.sql")
_HEADER = re.compile(r"^-- name: (\w+)\s*$", re.MULTILINE)


def parse(text: str) -> dict[str, str]:
    parts = _HEADER.split(text)
    statements: dict[str, str] = {}
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        sql = "\n".join(line for line in body.strip().splitlines() if not line.startswith("--")).strip()
        if name in statements:
            raise ValueError(f"query {name} is defined twice")
        if not sql:
            raise ValueError(f"query {name} has no SQL")
        statements[name] = sql.rstrip(";")
    return statements


@cache
def queries() -> dict[str, str]:
    return parse(QUERIES_FILE.read_text())


def sql(name: str) -> str:
    return queries()[name]
