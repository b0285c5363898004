"""Settings, read from the environment once at start-up (``Settings.from_env``) and passed down.

Nothing else reads the environment. Each field's docstring documents its variable (the README's
configuration table repeats them: keep the two in step).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path


@dataclass(frozen=True, slots=True)
class Settings:
    host: str = "127.0.0.1"
    """HOST: address the API listens on."""
    port: int = 3080
    """PORT: port the API listens on."""
    postgres_url: str = ""
    """POSTGRES_URL: libpq URL of the database (required outside `make run` / `make test`)."""
    nats_url: str = ""
    """NATS_URL: NATS server URL for EVENT/QUEUE targets (required by workers)."""
    auth_mode: str = "jwks"
    """AUTH_MODE: `jwks` (verify tokens against JWKS_URL) or `dev` (a local key pair under DEV_DATA_DIR)."""
    jwks_url: str = ""
    """JWKS_URL: where the identity provider publishes its signing keys."""
    jwt_issuer: str = ""
    """JWT_ISSUER: required `iss` claim when set."""
    jwt_audience: str = ""
    """JWT_AUDIENCE: required `aud` claim when set."""
    jwt_algorithms: str = "RS256,ES256,EdDSA"
    """JWT_ALGORITHMS: accepted signing algorithms (asymmetric only)."""
    jwt_tenants_claim: str = "tenants"
    """JWT_TENANTS_CLAIM: claim holding the tenant list (or "*"); dotted paths allowed."""
    jwt_roles_claim: str = "roles"
    """JWT_ROLES_CLAIM: claim holding the role list; dotted paths allowed (`realm_access.roles`)."""
    dev_data_dir: str = ".data"
    """DEV_DATA_DIR: where dev mode keeps its signing key (and `make run` its servers)."""
    log_level: str = "info"
    """LOG_LEVEL: debug, info, warning or error."""
    log_format: str = ""
    """LOG_FORMAT: `json` (one object per line) or `text`; default json unless stderr is a terminal."""
    max_body_bytes: int = 1024 * 1024
    """MAX_BODY_BYTES: largest accepted request body."""
    max_payload_bytes: int = 256 * 1024
    """MAX_PAYLOAD_BYTES: largest schedule `payload` (encoded JSON)."""
    tenant_max_schedules: int = 10_000
    """TENANT_MAX_SCHEDULES: most schedules one tenant may have (409 beyond)."""
    tenant_rate_limit_rps: float = 100.0
    """TENANT_RATE_LIMIT_RPS: API requests per second per tenant and API process, on average (429 beyond)."""
    tenant_rate_limit_burst: float = 200.0
    """TENANT_RATE_LIMIT_BURST: requests a tenant may send at once before the rate applies."""
    api_db_role: str = "scheduler_api"
    """API_DB_ROLE: role the API sets on its connections; row-level security confines it to one tenant per
    transaction. Grant it to the API's login role."""
    worker_db_role: str = "scheduler_worker"
    """WORKER_DB_ROLE: role workers set on their connections (all tenants, no DELETE). Grant it to their login."""
    db_pool_min: int = 1
    """DB_POOL_MIN: connections the API keeps open."""
    db_pool_max: int = 10
    """DB_POOL_MAX: most connections the API opens."""
    misfire_grace_sec: float = 60.0
    """MISFIRE_GRACE_SEC: an occurrence older than this when claimed counts as missed (misfirePolicy applies)."""
    worker_batch_size: int = 100
    """WORKER_BATCH_SIZE: schedules claimed per transaction."""
    worker_poll_max_sec: float = 1.0
    """WORKER_POLL_MAX_SEC: longest idle sleep between claims (NOTIFY wakes workers sooner)."""
    worker_concurrency: int = 256
    """WORKER_CONCURRENCY: deliveries in flight per worker process."""
    worker_shutdown_grace_sec: float = 20.0
    """WORKER_SHUTDOWN_GRACE_SEC: on SIGTERM, how long in-flight runs may finish before they are released."""
    worker_metrics_port: int = 9464
    """WORKER_METRICS_PORT: each worker's HTTP port for /metrics, /live and /ready (0: none)."""
    worker_metrics_host: str = "0.0.0.0"
    """WORKER_METRICS_HOST: address of that port."""
    run_lease_sec: float = 60.0
    """RUN_LEASE_SEC: a run not finished this long after its lease started is rescued by another worker."""
    secrets_key: str = ""
    """SECRETS_KEY: `kid:base64(32 bytes)[,older…]` sealing webhook secrets and secret headers at rest (AES-GCM);
    the first key encrypts, all decrypt. Required by the API and workers (dev mode keeps one under DEV_DATA_DIR)."""
    http_target_allow_cidrs: str = ""
    """HTTP_TARGET_ALLOW_CIDRS: internal networks HTTP targets may call (e.g. `10.20.0.0/16`); loopback, private,
    link-local and other internal addresses are refused otherwise (AUTH_MODE=dev also allows loopback)."""
    deadletter_subject: str = "scheduler.deadletter"
    """DEADLETTER_SUBJECT: NATS subject receiving runs that exhausted their attempts."""

    # --- bulk changes and backfill (issue 12) ---
    bulk_max_schedules: int = 1000
    """BULK_MAX_SCHEDULES: most schedules one bulk pause/resume/delete may select (400 beyond: narrow the labels)."""
    backfill_max_runs: int = 1000
    """BACKFILL_MAX_RUNS: most occurrences one backfill may record (400 beyond: split the range)."""

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        values: dict[str, object] = {}
        for f in fields(cls):
            raw = env.get(f.name.upper())
            if raw is None or raw == "":
                continue
            kind: Callable[[str], object] = type(f.default)  # every default is a str, int or float
            try:
                values[f.name] = kind(raw)
            except ValueError as exc:
                raise SystemExit(f"{f.name.upper()}={raw!r} is not a valid {type(f.default).__name__}") from exc
        return cls(**values)  # type: ignore[arg-type]

    @property
    def dev_dir(self) -> Path:
        return Path(self.dev_data_dir)
