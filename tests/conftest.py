"""Real servers for the integration tests: a throwaway Postgres and NATS started once per session.

POSTGRES_URL / NATS_URL point the suite at existing servers instead (it then creates its own databases and
needs CREATEDB). Throwaway servers live under a fresh /tmp directory that the unprivileged postgres user (used
when the suite runs as root) can traverse.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
from hypothesis import settings as hypothesis_settings
from psycopg import sql

from devstack.processes import pid_alive
from shared.db.migrate import migrate

# Property tests try the same examples on every run ("ci"), so a red suite is a regression of the change under
# test, not a case found by chance; HYPOTHESIS_PROFILE=explore draws fresh examples (run it to look for new ones).
hypothesis_settings.register_profile("ci", derandomize=True, database=None)
hypothesis_settings.register_profile("explore", derandomize=False)
hypothesis_settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

# Not $TMPDIR: as root, the unprivileged postgres user must be able to enter it.
THROWAWAY_BASE = "/tmp" if os.path.isdir("/tmp") else tempfile.gettempdir()
OWNER_FILE = "owner.pid"


def _throwaway_dir(name: str) -> Path:
    path = Path(tempfile.mkdtemp(prefix=f"sched-{name}-", dir=THROWAWAY_BASE))
    path.chmod(0o755)
    (path / OWNER_FILE).write_text(str(os.getpid()))
    return path


def _reap_orphans(name: str, embedded: Callable[[Path], Any]) -> None:
    """Stop and delete throwaway servers of earlier test runs that died before their teardown (killed, or a
    broken pipe), so they do not pile up on a CI machine."""
    for root in Path(THROWAWAY_BASE).glob(f"sched-{name}-*"):
        try:
            owner = int((root / OWNER_FILE).read_text())
        except (OSError, ValueError):
            continue
        if pid_alive(owner):
            continue
        with contextlib.suppress(Exception):
            embedded(root / name).stop()
        shutil.rmtree(root, ignore_errors=True)


def _server(variable: str, name: str, embedded: Callable[[Path], Any]) -> Iterator[str]:
    """The URL in ``variable`` if set, else a throwaway embedded server's, stopped and deleted afterwards."""
    if os.environ.get(variable):
        yield os.environ[variable]
        return
    _reap_orphans(name, embedded)
    root = _throwaway_dir(name)
    server = embedded(root / name)
    try:
        yield server.start()
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_server_url() -> Iterator[str]:
    from devstack.postgres import EmbeddedPostgres

    yield from _server("POSTGRES_URL", "pg", lambda path: EmbeddedPostgres(path, throwaway=True))


def database_url(server_url: str, name: str) -> str:
    parts = urlsplit(server_url)
    return urlunsplit(parts._replace(path=f"/{name}"))


def create_database(server_url: str, name: str, template: str | None = None) -> str:
    statement = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
    if template:
        statement += sql.SQL(" TEMPLATE {}").format(sql.Identifier(template))
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(statement)
    return database_url(server_url, name)


@pytest.fixture(scope="session")
def template_db(pg_server_url: str) -> str:
    """A database with every migration applied, cloned for each test module (cheaper than migrating)."""
    name = f"sched_tpl_{uuid.uuid4().hex[:8]}"
    migrate(create_database(pg_server_url, name))
    return name


@pytest.fixture(scope="module")
def db_url(pg_server_url: str, template_db: str) -> str:
    return create_database(pg_server_url, f"sched_{uuid.uuid4().hex[:12]}", template=template_db)


@pytest.fixture(scope="session")
def nats_url() -> Iterator[str]:
    from devstack.nats import EmbeddedNats

    yield from _server("NATS_URL", "nats", lambda path: EmbeddedNats(path, throwaway=True))


@pytest.fixture(scope="session")
def dev_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="sched-dev-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)
