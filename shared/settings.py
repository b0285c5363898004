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
    """JWT_AUDIENCE: required `aud` claim; AUTH_MODE=jwks refuses to start without it (JWT_AUDIENCE_NOT_REQUIRED)."""
    jwt_algorithms: str = "RS256,ES256,EdDSA"
    """JWT_ALGORITHMS: accepted signing algorithms (asymmetric only)."""
    jwt_tenants_claim: str = "tenants"
    """JWT_TENANTS_CLAIM: claim holding the tenant list (a JSON list of strings, ["*"] for all); dotted paths ok."""
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
    """TENANT_RATE_LIMIT_RPS: API requests per second per tenant and API process, on average (429 beyond); each
    token subject has a bucket of the same size across all its tenants."""
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
    run_lease_sec: float = 10.0
    """RUN_LEASE_SEC: how long a worker holds a run it is delivering without renewing it; workers renew the
    leases of runs still in flight by heartbeat (every quarter lease), so a crashed worker's runs are taken over
    about this long after the crash, and a long HTTP call is never taken over while its worker is alive."""
    secrets_key: str = ""
    """SECRETS_KEY: `kid:base64(32 bytes)[,older…]` sealing webhook secrets and secret headers at rest (AES-GCM);
    the first key encrypts, all decrypt. Required by the API and workers (dev mode keeps one under DEV_DATA_DIR)."""
    http_target_allow_cidrs: str = ""
    """HTTP_TARGET_ALLOW_CIDRS: internal networks HTTP targets may call (e.g. `10.20.0.0/16`); loopback, private,
    link-local and other internal addresses are refused otherwise (AUTH_MODE=dev also allows loopback)."""
    deadletter_subject: str = "scheduler.deadletter"
    """DEADLETTER_SUBJECT: operator-wide copy of every tenant's dead letters (each tenant gets its own on
    `<prefix>deadletter`); must lie outside the tenants' namespaces; empty: no copy."""

    # --- tenant NATS namespaces and JetStream limits ---
    nats_subject_prefix: str = "tenants.{tenant}."
    """NATS_SUBJECT_PREFIX: a tenant's event namespace (EVENT topics, its dead letters and notices); one JetStream
    stream per tenant captures `<prefix>>`. Must hold `{tenant}` as a token and end with `.`."""
    nats_queue_subject_prefix: str = "queues.{tenant}."
    """NATS_QUEUE_SUBJECT_PREFIX: a tenant's queue namespace (QUEUE topics); must not overlap NATS_SUBJECT_PREFIX."""
    nats_event_max_age_sec: float = 86400.0
    """NATS_EVENT_MAX_AGE_SEC: how long a tenant's event stream keeps an event (0: no limit)."""
    nats_event_max_msgs: int = 1_000_000
    """NATS_EVENT_MAX_MSGS: events a tenant's event stream keeps; the oldest go first (-1: no limit)."""
    nats_event_max_bytes: int = -1
    """NATS_EVENT_MAX_BYTES: bytes a tenant's event stream keeps, the oldest go first (-1: no limit). JetStream
    reserves this much storage per stream when it is created: size it against the server's store and tenants."""
    nats_queue_max_age_sec: float = 7 * 86400.0
    """NATS_QUEUE_MAX_AGE_SEC: how long an unconsumed QUEUE message is kept (0: no limit)."""
    nats_queue_max_msgs: int = 100_000
    """NATS_QUEUE_MAX_MSGS: unconsumed messages per queue; beyond, publishes fail (and are retried) (-1: no limit)."""
    nats_queue_max_bytes: int = -1
    """NATS_QUEUE_MAX_BYTES: unconsumed bytes per queue; beyond, publishes fail and are retried (-1: no limit;
    reserved per stream like NATS_EVENT_MAX_BYTES)."""
    nats_stream_replicas: int = 1
    """NATS_STREAM_REPLICAS: replicas of the streams the scheduler creates (3 in a clustered JetStream)."""

    # --- isolation and hardening of the API (issue 8) ---
    jwt_audience_not_required: int = 0
    """JWT_AUDIENCE_NOT_REQUIRED: 1 lets AUTH_MODE=jwks start without JWT_AUDIENCE, accepting tokens minted for any
    audience of the identity provider (logged as a warning at start-up). 0 (default): JWT_AUDIENCE is required."""
    jwt_max_lifetime_sec: int = 86400
    """JWT_MAX_LIFETIME_SEC: tokens whose `exp - iat` is longer are refused (401)."""
    trigger_eval_budget_ms: int = 50
    """TRIGGER_EVAL_BUDGET_MS: CPU time one request may spend evaluating triggers (create, update, previews);
    beyond it the request is answered 422 naming this limit."""
    trigger_eval_threads: int = 2
    """TRIGGER_EVAL_THREADS: threads evaluating triggers off the API's event loop."""
    trigger_eval_queue: int = 16
    """TRIGGER_EVAL_QUEUE: evaluations running or waiting for a thread per API process; beyond, 503 with Retry-After."""
    rate_limit_max_keys: int = 100_000
    """RATE_LIMIT_MAX_KEYS: rate-limit buckets kept per API process (least recently used dropped beyond; a dropped
    bucket was idle and full anyway unless the process is under a key-flooding attack)."""
    credential_header_patterns: str = (
        "authorization,proxy-authorization,cookie,x-api-key,"
        "*token*,*secret*,*key*,*password*,*passwd*,*credential*,*session*,*signature*"
    )
    """CREDENTIAL_HEADER_PATTERNS: header names (case-insensitive, `*` wildcards) that carry credentials: refused in
    a target's plain `headers` (400 pointing to `secretHeaders`)."""
    run_response_excerpt_bytes: int = 1024
    """RUN_RESPONSE_EXCERPT_BYTES: how much of an HTTP target's answer a run keeps in `delivery.response`, after
    secret values are redacted (0: none)."""
    max_header_bytes: int = 16 * 1024
    """MAX_HEADER_BYTES: largest request header (name and value), and MAX_HEADER_BYTES x 4 for all headers
    together; larger requests are answered 431."""

    # --- worker fleet: frozen workers, fencing, fairness -------------------------------------------------
    worker_db_timeout_sec: float = 3.0
    """WORKER_DB_TIMEOUT_SEC: Postgres ends a worker's transaction (and statement) older than this
    (`transaction_timeout` on PostgreSQL 17+, `idle_in_transaction_session_timeout` and `statement_timeout`),
    so a frozen worker (SIGSTOP, a stalled VM) holds the row locks of the schedules it claimed for seconds, not
    for as long as it is frozen. Worker transactions take milliseconds. 0: off."""
    worker_db_keepalive_sec: int = 5
    """WORKER_DB_KEEPALIVE_SEC: TCP keepalive idle time on worker connections (client and server side); a peer
    that stops answering is dropped after about three times this. 0: the operating system's defaults."""
    tenant_fire_rate: float = 0.0
    """TENANT_FIRE_RATE: most fires per second one tenant's schedules get from one worker process, on average
    (bursts of one second's worth); beyond it that tenant's due schedules wait while other tenants' fire. 0: no
    limit (claiming is fair across tenants either way)."""

    # Run history retention (sql/0040, worker/maintenance.py).
    runs_retention_days: float = 14.0
    """RUNS_RETENTION_DAYS: a partition of run history is dropped once it ended this many days ago (fractions
    allowed); its open runs are kept (moved to the default partition), never dropped."""
    runs_partition_sec: int = 86400
    """RUNS_PARTITION_SEC: the time span of one partition of run history, by scheduled time (86400: daily;
    3600: hourly, for rates where a day's indexes outgrow memory, at the cost of more partitions to plan)."""
    runs_partitions_ahead: int = 2
    """RUNS_PARTITIONS_AHEAD: partitions kept created beyond the current one."""
    runs_maintenance_interval_sec: float = 60.0
    """RUNS_MAINTENANCE_INTERVAL_SEC: how often each worker offers to create and drop partitions (one at a time
    does it, under an advisory lock); 0: never (then partitions must be managed otherwise)."""

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
