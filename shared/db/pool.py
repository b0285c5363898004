"""Connection pools configured the same way for the API and the workers."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import psycopg
import psycopg_pool
from psycopg import AsyncConnection, sql
from psycopg.types.string import TextLoader
from psycopg_pool import AsyncConnectionPool

# Settings that need a newer server than the oldest we support: skipped (not an error) on an older one.
_SINCE = {"transaction_timeout": 170000}


def _configure(role: str, session: Mapping[str, str]) -> Callable[[AsyncConnection], Awaitable[None]]:
    async def configure(conn: AsyncConnection) -> None:
        # JSON columns come back as text and are decoded by msgspec into typed structs: faster than psycopg's
        # json.loads into dicts and one decoding path for API bodies and stored rows.
        conn.adapters.register_loader("jsonb", TextLoader)
        conn.adapters.register_loader("json", TextLoader)
        await conn.set_autocommit(True)
        await conn.execute("SET TIME ZONE 'UTC'")
        for name, value in session.items():
            if conn.info.server_version >= _SINCE.get(name, 0):
                await conn.execute("SELECT set_config(%s, %s, false)", (name, value))
        if role:
            # The row-level security policies (sql/0004) are written for these roles.
            await conn.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(role)))
        await conn.set_autocommit(False)

    return configure


def make_pool(
    url: str,
    *,
    min_size: int,
    max_size: int,
    name: str,
    role: str = "",
    session: Mapping[str, str] | None = None,
    connect: Mapping[str, Any] | None = None,
) -> AsyncConnectionPool:
    """``session``: settings (GUCs) set on each connection; ``connect``: extra libpq connection parameters."""
    return AsyncConnectionPool(
        url,
        min_size=min_size,
        max_size=max_size,
        name=name,
        open=False,
        configure=_configure(role, session or {}),
        kwargs={"application_name": f"scheduler-{name}", **(connect or {})},
        timeout=10.0,
    )


def guarded_session(timeout_sec: float, keepalive_sec: int) -> tuple[dict[str, str], dict[str, Any]]:
    """Session settings and libpq parameters for connections that must not hold locks while their client is
    frozen or gone: the server ends a transaction older than ``timeout_sec`` (PostgreSQL 17+ counts idle time
    inside a pipeline too, which `idle_in_transaction_session_timeout` does not see), and both ends probe an
    idle TCP peer every ``keepalive_sec``."""
    session: dict[str, str] = {}
    connect: dict[str, Any] = {}
    if timeout_sec > 0:
        ms = str(max(1, int(timeout_sec * 1000)))
        session |= {"transaction_timeout": ms, "idle_in_transaction_session_timeout": ms, "statement_timeout": ms}
    if keepalive_sec > 0:
        interval = max(1, keepalive_sec // 2)
        user_timeout_ms = str((keepalive_sec + 3 * interval) * 1000)
        session |= {
            "tcp_keepalives_idle": str(keepalive_sec),
            "tcp_keepalives_interval": str(interval),
            "tcp_keepalives_count": "3",
            "tcp_user_timeout": user_timeout_ms,
        }
        connect |= {
            "keepalives": 1,
            "keepalives_idle": keepalive_sec,
            "keepalives_interval": interval,
            "keepalives_count": 3,
            "tcp_user_timeout": int(user_timeout_ms),
        }
    return session, connect


# The errors that mean "the database is unreachable right now": back off and retry, nothing is wrong with the data.
CONNECTION_ERRORS = (psycopg.OperationalError, psycopg_pool.PoolTimeout)
