"""The API's and the workers' own database logins, created or updated by the database owner.

As in production (deploy/helm/scheduler/README.md): each login may only SET ROLE to the role its row-level
security policies are written for, so `RESET ROLE` on its connection reaches nothing more (NOINHERIT: the login
alone holds no privilege at all). `make run` calls :func:`ensure_login_roles`; docker-compose runs
``python -m shared.db.logins --api-url … --worker-url …`` after the migrations, with POSTGRES_URL the owner's.
"""

from __future__ import annotations

import argparse
import os
import secrets
from urllib.parse import quote, unquote, urlsplit, urlunsplit

import psycopg
from psycopg import sql

# service -> (the role its policies are written for, its login)
SERVICE_LOGINS = {
    "api": ("scheduler_api", "scheduler_api_login"),
    "worker": ("scheduler_worker", "scheduler_worker_login"),
}


def ensure_login_roles(admin_url: str, passwords: dict[str, str] | None = None) -> dict[str, str]:
    """Create (or update) the API's and the workers' login roles; their connection URLs by service.

    Passwords are new random ones on each call unless given (docker-compose passes its own).
    """
    urls = {}
    with psycopg.connect(admin_url, autocommit=True) as conn:
        for service, (role, login) in SERVICE_LOGINS.items():
            password = (passwords or {}).get(service) or secrets.token_urlsafe(24)
            exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (login,)).fetchone()
            verb = sql.SQL("ALTER" if exists else "CREATE")
            conn.execute(
                sql.SQL(
                    "{} ROLE {} LOGIN NOINHERIT NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS "
                    "PASSWORD {}"
                ).format(verb, sql.Identifier(login), sql.Literal(password))
            )
            conn.execute(sql.SQL("GRANT {} TO {}").format(sql.Identifier(role), sql.Identifier(login)))
            urls[service] = _with_login(admin_url, login, password)
    return urls


def _with_login(url: str, user: str, password: str) -> str:
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{quote(user, safe='')}:{quote(password, safe='')}@{host}"))


def service_url(admin_url: str, service: str) -> str:
    """The URL of ``service``'s login (resetting its password)."""
    return ensure_login_roles(admin_url)[service]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m shared.db.logins",
        description="create (or update) the API's and workers' login roles on POSTGRES_URL, as the URLs name them",
    )
    parser.add_argument("--api-url", required=True, help="the API's connection URL (user and password are used)")
    parser.add_argument("--worker-url", required=True, help="the workers' connection URL")
    args = parser.parse_args(argv)
    passwords = {}
    for service, url in (("api", args.api_url), ("worker", args.worker_url)):
        parts = urlsplit(url)
        login = SERVICE_LOGINS[service][1]
        if unquote(parts.username or "") != login or not parts.password:
            raise SystemExit(f"--{service}-url must log in as {login} with a password")
        passwords[service] = unquote(parts.password)
    owner = os.environ.get("POSTGRES_URL")
    if not owner:
        raise SystemExit("POSTGRES_URL (the database owner's URL) is not set")
    ensure_login_roles(owner, passwords)
    print("login roles scheduler_api_login and scheduler_worker_login are ready")


if __name__ == "__main__":
    main()
