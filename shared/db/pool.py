"""Connection pools configured the same way for the API and the workers."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import psycopg
import psycopg_pool
from psycopg import AsyncConnection, sql
from psycopg.types.string import TextLoader
from psycopg_pool import AsyncConnectionPool


def _configure(role: str) -> Callable[[AsyncConnection], Awaitable[None]]:
    async def configure(conn: AsyncConnection) -> None:
        # JSON columns come back as text and are decoded by msgspec into typed structs: faster than psycopg's
        # json.loads into dicts and one decoding path for API bodies and stored rows.
        conn.adapters.register_loader("jsonb", TextLoader)
        conn.adapters.register_loader("json", TextLoader)
        await conn.set_autocommit(True)
        await conn.execute("SET TIME ZONE 'UTC'")
        if role:
            # The row-level security policies (sql/0004) are written for these roles.
            await conn.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(role)))
        await conn.set_autocommit(False)

    return configure


def make_pool(url: str, *, min_size: int, max_size: int, name: str, role: str = "") -> AsyncConnectionPool:
    return AsyncConnectionPool(
        url,
        min_size=min_size,
        max_size=max_size,
        name=name,
        open=False,
        configure=_configure(role),
        kwargs={"application_name": f"scheduler-{name}"},
        timeout=10.0,
    )


# The errors that mean "the database is unreachable right now": back off and retry, nothing is wrong with the data.
CONNECTION_ERRORS = (psycopg.OperationalError, psycopg_pool.PoolTimeout)
