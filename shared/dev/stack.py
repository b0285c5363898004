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

from shared.db.migrate import migrate
from shared.dev.keys import dev_secrets_spec

DATA_DIR = Path(".data")
DATABASE = "scheduler"
DEMO_TENANT = "demo"


@dataclass
class Stack:
    data_dir: Path = DATA_DIR
    postgres_url: str = ""
    nats_url: str = ""
    _stops: list = field(default_factory=list)

    def start_postgres(self) -> str:
        self.postgres_url = os.environ.get("POSTGRES_URL", "")
        if not self.postgres_url:
            from shared.dev.postgres import EmbeddedPostgres

            server = EmbeddedPostgres(self.data_dir / "postgres")
            server.start()
            self._stops.append(server.stop)
            with psycopg.connect(server.url, autocommit=True) as conn:
                exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,)).fetchone()
                if not exists:
                    conn.execute(f"CREATE DATABASE {DATABASE}")
            self.postgres_url = server.database_url(DATABASE)
        migrate(self.postgres_url)
        return self.postgres_url

    def start_nats(self) -> str:
        self.nats_url = os.environ.get("NATS_URL", "")
        if not self.nats_url:
            from shared.dev.nats import EmbeddedNats

            server = EmbeddedNats(self.data_dir / "nats")
            self.nats_url = server.start()
            self._stops.append(server.stop)
        return self.nats_url

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(POSTGRES_URL=self.postgres_url, NATS_URL=self.nats_url, DEV_DATA_DIR=str(self.data_dir))
        env.setdefault("AUTH_MODE", "dev")
        env.setdefault("LOG_FORMAT", "text")
        # The API seals webhook secrets and the workers open them: both need the same key.
        env.setdefault("SECRETS_KEY", dev_secrets_spec(self.data_dir))
        return env

    def stop(self) -> None:
        for stop in reversed(self._stops):
            stop()
        self._stops.clear()


def _token(data_dir: Path, tenants: str, roles: str, ttl_sec: int = 86400) -> str:
    from api.auth import mint_dev_token

    tenant_claim: list[str] | str = "*" if tenants == "*" else [t for t in tenants.split(",") if t]
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
        children.append(subprocess.Popen([sys.executable, "-m", "api"], env=env))
        base_port = int(env.get("WORKER_METRICS_PORT", "9464"))
        for i in range(workers):
            # One metrics/health port each, on this machine only.
            worker_env = {
                **env,
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
    os.execve(sys.executable, [sys.executable, "-m", module], stack.env())


def stop_all() -> None:
    from shared.dev.nats import EmbeddedNats
    from shared.dev.postgres import EmbeddedPostgres

    if (DATA_DIR / "postgres").exists():
        EmbeddedPostgres(DATA_DIR / "postgres").stop()
    if (DATA_DIR / "nats").exists():
        EmbeddedNats(DATA_DIR / "nats").stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m shared.dev")
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
