"""Apply ``sql/NNNN_*.sql`` in order, once each, recorded in ``schema_migrations``.

Safe when several processes run it at once (an advisory lock serialises them) and idempotent (applied files are
skipped). A file whose content changed after it was applied is an error, not silently ignored.
"""

from __future__ import annotations

import hashlib
from importlib import resources
from pathlib import Path

import psycopg

# The repository's sql/ folder, installed as the package shared.db.migrations (see pyproject.toml), so the same
# lookup works in a checkout (editable install) and in the image (a regular install of the wheel).
SQL_DIR = Path(str(resources.files("shared.db.migrations")))
# Arbitrary constant: every migrator takes the same lock.
_LOCK_KEY = 0x5C4ED01E

_BOOKKEEPING = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    text PRIMARY KEY,
    checksum   text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)"""


def migration_files(sql_dir: Path = SQL_DIR) -> list[Path]:
    return sorted(p for p in sql_dir.glob("[0-9][0-9][0-9][0-9]_*.sql"))


def migrate(url: str, sql_dir: Path = SQL_DIR) -> list[str]:
    """Apply pending migrations; return the versions applied by this call."""
    applied_now: list[str] = []
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (_LOCK_KEY,))
        try:
            conn.execute(_BOOKKEEPING)
            done: dict[str, str] = dict(conn.execute("SELECT version, checksum FROM schema_migrations").fetchall())
            for path in migration_files(sql_dir):
                text = path.read_text()
                checksum = hashlib.sha256(text.encode()).hexdigest()
                version = path.stem
                if version in done:
                    if done[version] != checksum:
                        raise RuntimeError(f"migration {path.name} changed after it was applied")
                    continue
                with conn.transaction():
                    conn.execute(text.encode())
                    conn.execute(
                        "INSERT INTO schema_migrations (version, checksum) VALUES (%s, %s)", (version, checksum)
                    )
                applied_now.append(version)
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_KEY,))
    return applied_now


def main() -> None:
    from shared.settings import Settings

    settings = Settings.from_env()
    if not settings.postgres_url:
        raise SystemExit("POSTGRES_URL is not set")
    applied = migrate(settings.postgres_url)
    print(f"migrations applied: {', '.join(applied) if applied else 'none pending'}")


if __name__ == "__main__":
    main()
