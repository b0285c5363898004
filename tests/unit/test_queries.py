"""The named-statement file: every name parses, is unique, and the repository only asks for existing ones."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from shared.db.queries import QUERIES_FILE, parse, queries

ROOT = Path(__file__).resolve().parents[2]


def test_every_statement_has_a_name_description_and_sql():
    text = QUERIES_FILE.read_text()
    headers = re.findall(r"^-- name: (\w+)\n-- (.+)$", text, re.MULTILINE)
    assert [h[0] for h in headers] == list(queries())
    assert all(description.strip() for _, description in headers)
    assert all(re.fullmatch(r"[a-z]+_[a-z_]+", name) for name in queries())


def test_code_only_uses_defined_statements():
    used = set()
    for path in [*ROOT.glob("shared/**/*.py"), *ROOT.glob("worker/**/*.py"), *ROOT.glob("api/**/*.py")]:
        used |= set(re.findall(r"""\bsql\(["'](\w+)["']\)""", path.read_text()))
    assert used, "no statement use found"
    assert used <= set(queries()), used - set(queries())
    assert set(queries()) <= used, f"unused statements: {set(queries()) - used}"


def test_duplicate_names_are_refused():
    with pytest.raises(ValueError, match="twice"):
        parse("-- name: a_b\nSELECT 1;\n-- name: a_b\nSELECT 2;\n")
