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


def test_partitioning_keeps_an_existing_history_and_its_security(empty_db: str, tmp_path: Path):
    """sql/0040 on a database whose runs table has rows: they stay, readable by id and by tenant only, the
    policies and grants hold on the partitioned table, and the old rows expire as one partition."""
    before = tmp_path / "before"
    before.mkdir()
    for path in migration_files():
        if path.name < "0040":
            shutil.copy(path, before)
    migrate(empty_db, before)
    with psycopg.connect(empty_db) as conn:
        conn.execute(
            """INSERT INTO runs (id, schedule_id, tenant_id, scheduled_for, idempotency_key, status, created_at)
               SELECT gen_random_uuid(), gen_random_uuid(), 'tenant-' || (i % 2), now() - i * interval '1 hour',
                      'key-' || i, CASE WHEN i % 100 = 0 THEN 'RETRYING' ELSE 'SUCCEEDED' END,
                      now() - i * interval '1 hour'
                 FROM generate_series(1, 1000) AS i"""
        )
        old_id, old_when = conn.execute(
            "SELECT id, scheduled_for FROM runs WHERE tenant_id = 'tenant-1' LIMIT 1"
        ).fetchone()

    assert migrate(empty_db) == [p.stem for p in migration_files() if p.name >= "0040"]

    with psycopg.connect(empty_db) as conn:
        conn.execute("SET TIME ZONE 'UTC'")
        assert conn.execute("SELECT relkind FROM pg_class WHERE relname = 'runs'").fetchone() == ("p",)
        parts = {r[0]: (r[1], r[2], r[3]) for r in conn.execute("SELECT * FROM runs_partitions()")}
        assert set(parts) == {"runs_legacy", "runs_default"}
        assert parts["runs_legacy"][0] is None and parts["runs_legacy"][1] is not None
        assert conn.execute("SELECT count(*) FROM runs_legacy").fetchone() == (1000,)
        assert conn.execute("SELECT count(*) FROM runs").fetchone() == (1000,)
        key = conn.execute(
            "SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = 'runs'::regclass AND contype = 'p'"
        ).fetchone()
        assert key == ("PRIMARY KEY (id, scheduled_for)",)
        indexes = {r[0] for r in conn.execute("SELECT indexname FROM pg_indexes WHERE tablename = 'runs'")}
        assert {"runs_pkey", "runs_schedule_idx", "runs_open_idx"} <= indexes
        policies = {r[0] for r in conn.execute("SELECT policyname FROM pg_policies WHERE tablename = 'runs'")}
        assert policies == {"runs_tenant", "runs_worker"}

        # The API's role: one tenant per transaction, through the parent; the old rows by their old ids.
        conn.execute("SET ROLE scheduler_api")
        conn.execute("SELECT set_config('app.tenant_id', 'tenant-1', true)")
        assert {r[0] for r in conn.execute("SELECT DISTINCT tenant_id FROM runs")} == {"tenant-1"}
        found = conn.execute(
            """SELECT scheduled_for FROM runs WHERE id = %(id)s AND scheduled_for >= run_id_scheduled_from(%(id)s)
                  AND scheduled_for < run_id_scheduled_until(%(id)s)""",
            {"id": old_id},
        ).fetchone()
        assert found == (old_when,)
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("SELECT count(*) FROM runs_legacy")
        conn.rollback()
        conn.execute("SET ROLE scheduler_api")
        conn.execute("SELECT set_config('app.tenant_id', 'tenant-1', true)")
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="row-level security"):
            conn.execute(
                """INSERT INTO runs (id, schedule_id, tenant_id, scheduled_for, idempotency_key)
                   VALUES (gen_random_uuid(), gen_random_uuid(), 'tenant-0', now(), 'sneaky')"""
            )
        conn.rollback()

        # The workers' role: every tenant, no DELETE; a new run lands beside the old ones.
        conn.execute("SET ROLE scheduler_worker")
        assert conn.execute("SELECT count(DISTINCT tenant_id) FROM runs").fetchone() == (2,)
        conn.execute(
            """INSERT INTO runs (id, schedule_id, tenant_id, scheduled_for, idempotency_key)
               VALUES (gen_random_uuid(), gen_random_uuid(), 'tenant-0', now(), 'after')"""
        )
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("DELETE FROM runs")
        conn.rollback()

        # Once expired, the old history goes as one partition; its open runs stay.
        conn.execute("RESET ROLE")
        conn.execute("ALTER TABLE runs DETACH PARTITION runs_legacy")
        conn.execute("ALTER TABLE runs ATTACH PARTITION runs_legacy FOR VALUES FROM (MINVALUE) TO (now())")
        conn.commit()
        conn.execute("SET ROLE scheduler_worker")
        assert conn.execute("SELECT runs_partition_drop('runs_legacy')").fetchone() == (10,)
        conn.commit()
        assert conn.execute("SELECT count(*), min(status), max(status) FROM runs").fetchone() == (
            10,
            "RETRYING",
            "RETRYING",
        )


def test_partitioning_an_empty_history_leaves_only_the_default_partition(empty_db: str):
    migrate(empty_db)
    with psycopg.connect(empty_db) as conn:
        assert [r[0] for r in conn.execute("SELECT name FROM runs_partitions()")] == ["runs_default"]
        assert conn.execute("SELECT to_regclass('runs_legacy')").fetchone() == (None,)
