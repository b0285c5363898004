"""Migrations from scratch give the schema the code expects; re-running and racing are safe."""

from __future__ import annotations

import re
import shutil
import threading
import uuid
from pathlib import Path

import psycopg
import pytest

from shared.db.migrate import SQL_DIR, migrate, migration_files
from shared.db.queries import queries
from tests.conftest import create_database


@pytest.fixture
def empty_db(pg_server_url: str) -> str:
    return create_database(pg_server_url, f"sched_empty_{uuid.uuid4().hex[:8]}")


def test_from_scratch_then_idempotent(empty_db: str):
    applied = migrate(empty_db)
    assert applied == [p.stem for p in migration_files()]
    assert migrate(empty_db) == []
    with psycopg.connect(empty_db) as conn:
        tables = {r[0] for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
        assert {"schedules", "runs", "schema_migrations"} <= tables
        indexes = {r[0] for r in conn.execute("SELECT indexname FROM pg_indexes WHERE schemaname = 'public'")}
        assert {"schedules_due_idx", "runs_schedule_idx", "runs_open_idx", "schedules_tenant_name_key"} <= indexes
        due = conn.execute("SELECT indexdef FROM pg_indexes WHERE indexname = 'schedules_due_idx'").fetchone()
        assert due is not None and "WHERE (enabled AND (next_run_at IS NOT NULL))" in due[0]


def test_every_named_statement_fits_the_schema(empty_db: str):
    migrate(empty_db)
    with psycopg.connect(empty_db, autocommit=True) as conn:
        for name, text in queries().items():
            # EXPLAIN plans without executing: it fails on unknown columns, tables or type errors.
            explained = re.sub(r"%\((\w+)\)[sb]", "NULL", text).replace("%%", "%")
            # A utility statement (LISTEN) cannot be explained: run it (it changes nothing).
            statement = explained if explained.startswith("LISTEN ") else f"EXPLAIN {explained}"
            try:
                conn.execute(statement)
            except psycopg.Error as exc:
                pytest.fail(f"statement {name}: {exc}")


def test_concurrent_migrators_apply_each_file_once(empty_db: str):
    results: list[list[str]] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            results.append(migrate(empty_db))
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert sorted(len(r) for r in results) == [0, 0, 0, len(migration_files())]


def test_an_edited_applied_migration_is_an_error(empty_db: str, tmp_path: Path):
    sql_dir = tmp_path / "sql"
    shutil.copytree(SQL_DIR, sql_dir)
    migrate(empty_db, sql_dir)
    first = migration_files(sql_dir)[0]
    first.write_text(first.read_text() + "\n-- edited\n")
    with pytest.raises(RuntimeError, match="changed after it was applied"):
        migrate(empty_db, sql_dir)
