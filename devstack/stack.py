"""The local stack behind `make run`, `make api`, `make migrate` and `make token`.

Embedded Postgres and NATS live under ``.data/`` and are used only when POSTGRES_URL / NATS_URL are unset. A
server left running by an earlier run that was killed is found and reused, and stopped when this run ends.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

from devstack.processes import free_port
from shared.db.logins import ensure_login_roles
from shared.db.migrate import migrate
from shared.secrets import dev_secrets_spec

DATA_DIR = Path(".data")
DATABASE = "scheduler"
DEMO_TENANT = "demo"


@dataclass
class Stack:
    data_dir: Path = DATA_DIR
    postgres_url: str = ""
    nats_url: str = ""
    service_urls: dict[str, str] = field(default_factory=dict)
    _stops: list = field(default_factory=list)
    # The process environment over `.env`: what every dev command and its children see.
    environ: dict[str, str] = field(default_factory=lambda: {**read_dotenv(Path(".env")), **os.environ})

    def start_postgres(self) -> str:
        self.postgres_url = self.environ.get("POSTGRES_URL", "")
        if not self.postgres_url:
            from devstack.postgres import EmbeddedPostgres

            server = EmbeddedPostgres(self.data_dir / "postgres")
            server.start()
            self._stops.append(server.stop)
            with psycopg.connect(server.url, autocommit=True) as conn:
                exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,)).fetchone()
                if not exists:
                    conn.execute(f"CREATE DATABASE {DATABASE}")
            self.postgres_url = server.database_url(DATABASE)
        migrate(self.postgres_url)
        try:
            self.service_urls = ensure_login_roles(self.postgres_url)
        except psycopg.errors.InsufficientPrivilege:
            print(
                "warning: POSTGRES_URL may not create roles; the API and workers use it as given (create their "
                "logins as deploy/helm/scheduler/README.md shows)",
                file=sys.stderr,
            )
        return self.postgres_url

    def start_nats(self) -> str:
        self.nats_url = self.environ.get("NATS_URL", "")
        if not self.nats_url:
            from devstack.nats import EmbeddedNats

            server = EmbeddedNats(self.data_dir / "nats")
            self.nats_url = server.start()
            self._stops.append(server.stop)
        return self.nats_url

    def env(self, service: str | None = None) -> dict[str, str]:
        """The environment of a child process; ``service`` ("api", "worker") connects with that service's login."""
        env = dict(self.environ)
        database = self.service_urls.get(service or "", self.postgres_url)
        env.update(POSTGRES_URL=database, NATS_URL=self.nats_url, DEV_DATA_DIR=str(self.data_dir))
        env.setdefault("AUTH_MODE", "dev")
        env.setdefault("LOG_FORMAT", "text")
        # The API seals webhook secrets and the workers open them: both need the same key.
        env.setdefault("SECRETS_KEY", dev_secrets_spec(self.data_dir))
        return env

    def stop(self) -> None:
        for stop in reversed(self._stops):
            stop()
        self._stops.clear()


def read_dotenv(path: Path) -> dict[str, str]:
    """``KEY=VALUE`` lines of a `.env` file (copied from .env.example), for the dev stack only: the services
    themselves read nothing but their environment, and variables already set win over the file."""
    if not path.is_file():
        return {}
    values = {}
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.removeprefix("export ").partition("=")
        if not sep or not key.strip().isidentifier():
            raise SystemExit(f"{path}:{number}: expected KEY=VALUE, got {line!r}")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        if value:
            values[key.strip()] = value
    return values


def _token(data_dir: Path, tenants: str, roles: str, ttl_sec: int = 86400) -> str:
    from api.devmode import mint_dev_token

    tenant_claim = [t for t in tenants.split(",") if t]  # a list, also for "*": the API refuses strings
    return mint_dev_token(data_dir, tenant_claim, [r for r in roles.split(",") if r], ttl_sec=ttl_sec)


def _banner(stack: Stack, host: str, port: int, workers: int) -> str:
    base = f"http://{host}:{port}"
    token = _token(stack.data_dir, DEMO_TENANT, "scheduler.admin")
    return f"""
  Scheduler is running ({workers} worker(s)); Ctrl-C stops everything.

  Console      {base}/console/            (dev mode: signed in with an admin token for {DEMO_TENANT})
  API docs     {base}/schema/swagger      (OpenAPI JSON: {base}/schema/openapi.json)
  Postgres     {stack.postgres_url}
  NATS         {stack.nats_url}
  Tenant       {DEMO_TENANT}
  Dev token    (24 h, roles scheduler.admin; more with `make token TENANT=... ROLES=...`)

export TOKEN={token}

  Try:
  curl -s {base}/schedules -H "Authorization: Bearer $TOKEN" -H "X-Tenant-Id: {DEMO_TENANT}" \\
       -H 'Content-Type: application/json' \\
       -d '{{"name":"every-minute","tz":"Europe/Berlin","trigger":{{"type":"CRON","cron":"* * * * *"}},
            "target":{{"kind":"EVENT","eventTopic":"demo.tick"}}}}'
"""


def _wait_for_api(host: str, port: int, children: list[subprocess.Popen[bytes]], timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and all(c.poll() is None for c in children):
        try:
            with urllib.request.urlopen(f"http://{host}:{port}/live", timeout=1) as response:
                if response.status == 200:
                    return True
        except OSError:
            time.sleep(0.1)
    return False


async def _subscribe(url: str, subject: str) -> None:
    import nats

    nc = await nats.connect(url)
    sub = await nc.subscribe(subject)
    print(f"listening on {subject} at {url} (Ctrl-C stops)", flush=True)
    async for msg in sub.messages:
        print(f"[{msg.subject}] {dict(msg.headers or {})}\n{msg.data.decode(errors='replace')}", flush=True)


def run(workers: int) -> int:
    stack = Stack()
    children: list[subprocess.Popen[bytes]] = []
    stopping = False

    def request_stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    try:
        stack.start_postgres()
        stack.start_nats()
        env = stack.env()
        host, port = env.get("HOST", "127.0.0.1"), int(env.get("PORT", "3080"))
        children.append(subprocess.Popen([sys.executable, "-m", "api"], env=stack.env("api")))
        base_port = int(env.get("WORKER_METRICS_PORT", "9464"))
        for i in range(workers):
            # One metrics/health port each, on this machine only.
            worker_env = {
                **stack.env("worker"),
                "WORKER_METRICS_PORT": str(base_port + i if base_port else 0),
                "WORKER_METRICS_HOST": env.get("WORKER_METRICS_HOST", "127.0.0.1"),
            }
            children.append(subprocess.Popen([sys.executable, "-m", "worker"], env=worker_env))
        if not _wait_for_api(host, port, children):
            print("the API did not come up; stopping the stack", file=sys.stderr)
            return 1
        print(_banner(stack, host, port, workers), flush=True)
        while not stopping:
            if any(child.poll() is not None for child in children):
                print("a child process exited; stopping the stack", file=sys.stderr)
                return 1
            time.sleep(0.2)
        return 0
    finally:
        for child in children:
            if child.poll() is None:
                child.terminate()
        for child in children:
            try:
                # Longer than a worker's shutdown grace (WORKER_SHUTDOWN_GRACE_SEC, 20 s by default).
                child.wait(timeout=40)
            except subprocess.TimeoutExpired:
                child.kill()
        stack.stop()


def exec_with_stack(module: str, nats: bool) -> None:
    """Run ``python -m module`` against the embedded servers, which stay up afterwards (`make clean` stops them)."""
    stack = Stack()
    stack.start_postgres()
    if nats:
        stack.start_nats()
    env = stack.env(module)
    if module == "worker" and "WORKER_METRICS_PORT" not in stack.environ:
        # `make run`'s workers hold 9464, 9465, ...: an extra worker takes a free port instead of failing.
        env["WORKER_METRICS_PORT"] = str(free_port())
        env.setdefault("WORKER_METRICS_HOST", "127.0.0.1")
        print(f"worker metrics, /live and /ready on http://127.0.0.1:{env['WORKER_METRICS_PORT']}", flush=True)
    os.execve(sys.executable, [sys.executable, "-m", module], env)


def stop_all() -> None:
    from devstack.nats import EmbeddedNats
    from devstack.postgres import EmbeddedPostgres

    if (DATA_DIR / "postgres").exists():
        EmbeddedPostgres(DATA_DIR / "postgres").stop()
    if (DATA_DIR / "nats").exists():
        EmbeddedNats(DATA_DIR / "nats").stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devstack")
    sub = parser.add_subparsers(dest="command", required=True)
    run_p = sub.add_parser("run", help="start Postgres, NATS, migrations, the API and workers")
    run_p.add_argument("--workers", type=int, default=int(os.environ.get("WORKERS", "2")))
    sub.add_parser("migrate", help="apply pending migrations")
    sub.add_parser("api", help="serve the API against the local stack")
    sub.add_parser("worker", help="run one worker against the local stack")
    sub.add_parser("stop", help="stop the embedded servers under .data/")
    sub_p = sub.add_parser("sub", help="print the messages published on a NATS subject (wildcards allowed)")
    sub_p.add_argument("subject")
    token_p = sub.add_parser("token", help="print a dev bearer token")
    token_p.add_argument("--tenant", default=DEMO_TENANT, help="comma-separated tenants, or *")
    token_p.add_argument("--roles", default="scheduler.editor", help="comma-separated roles")
    token_p.add_argument("--ttl", type=int, default=86400, help="lifetime in seconds")
    args = parser.parse_args(argv)

    match args.command:
        case "run":
            return run(args.workers)
        case "migrate":
            stack = Stack()
            stack.start_postgres()
            print(f"migrations applied to {stack.postgres_url}")
        case "api":
            exec_with_stack("api", nats=False)
        case "worker":
            exec_with_stack("worker", nats=True)
        case "stop":
            stop_all()
        case "sub":
            stack = Stack()
            with contextlib.suppress(KeyboardInterrupt):
                asyncio.run(_subscribe(stack.start_nats(), args.subject))
        case "token":
            print(_token(Path(os.environ.get("DEV_DATA_DIR", DATA_DIR)), args.tenant, args.roles, args.ttl))
    return 0
