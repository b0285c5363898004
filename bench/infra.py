"""What every bench mode needs: embedded servers, the API and workers as child processes, and cleaning all of
it up however the bench ends (normally, an exception, Ctrl-C or SIGTERM; children die with a SIGKILLed bench).

Dev tooling: nothing in api/, worker/ or shared/ imports this.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from devstack.nats import EmbeddedNats
from devstack.postgres import EmbeddedPostgres
from devstack.processes import free_port
from shared.db.migrate import migrate
from shared.secrets import dev_secrets_spec

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / ".bench" / "results.jsonl"
TEMPLATE = "bench_template"
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # runs in the child between fork and exec
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class Interrupted(SystemExit):
    pass


def exit_on_signals() -> None:
    """SIGTERM and SIGINT unwind the stack (so every ``finally`` stops what it started) instead of killing us;
    so does our parent's death (`make`, killed by SIGTERM, does not always pass it on)."""
    _die_with_parent()

    def handler(signum: int, _frame: object) -> None:
        # A second signal during cleanup must not cut the cleanup short.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        raise Interrupted(128 + signum)

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True).stdout
        return out.stdout.strip() + ("+dirty" if dirty.strip() else "")
    except OSError:
        return "unknown"


def record(result: dict[str, Any], path: Path = RESULTS) -> None:
    """Append one JSON line per configuration, for comparing commits."""
    path.parent.mkdir(parents=True, exist_ok=True)
    line = {"at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "commit": git_commit(), **result}
    with path.open("a") as handle:
        handle.write(json.dumps(line, sort_keys=False) + "\n")


class Lab:
    """Embedded Postgres (durable settings, like production) and NATS with JetStream, plus child processes."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="sched-bench-", dir="/tmp"))
        self.root.chmod(0o755)
        self.pg = EmbeddedPostgres(self.root / "pg")
        self.nats = EmbeddedNats(self.root / "nats", throwaway=True)
        self.nats_url = ""
        self.children: list[subprocess.Popen[bytes]] = []
        self.dev_dir = self.root / "dev"
        self.dev_dir.mkdir()

    def __enter__(self) -> Lab:
        try:
            self.pg.start()
            self.nats_url = self.nats.start()
            migrate(self.pg.create_database(TEMPLATE))
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def database(self) -> str:
        return self.pg.create_database(f"bench_{uuid.uuid4().hex[:8]}", template=TEMPLATE)

    def env(self, url: str, **extra: str) -> dict[str, str]:
        return {
            **os.environ,
            "POSTGRES_URL": url,
            "NATS_URL": self.nats_url,
            "AUTH_MODE": "dev",
            "DEV_DATA_DIR": str(self.dev_dir),
            "SECRETS_KEY": dev_secrets_spec(self.dev_dir),
            "LOG_LEVEL": "warning",
            "LOG_FORMAT": "text",
            "WORKER_METRICS_PORT": "0",  # K workers on one host would fight over one port
            "HTTP_TARGET_ALLOW_CIDRS": "127.0.0.0/8",  # the bench's own receiver
            **extra,
        }

    def spawn(self, module: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
        child = subprocess.Popen(
            [sys.executable, "-m", module], cwd=ROOT, env=env, preexec_fn=_die_with_parent, stdin=subprocess.DEVNULL
        )
        self.children.append(child)
        return child

    def start_api(self, url: str, **extra: str) -> str:
        port = free_port()
        env = self.env(
            url,
            PORT=str(port),
            HOST="127.0.0.1",
            # The bench measures the API, not its per-tenant rate limiter.
            TENANT_RATE_LIMIT_RPS="1000000",
            TENANT_RATE_LIMIT_BURST="1000000",
            TENANT_MAX_SCHEDULES="100000000",
            DB_POOL_MAX=extra.pop("DB_POOL_MAX", "16"),
            **extra,
        )
        child = self.spawn("api", env)
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if child.poll() is not None:
                raise RuntimeError("the API exited during startup")
            with contextlib.suppress(OSError), urllib.request.urlopen(f"{base}/ready", timeout=1) as answer:
                if answer.status == 200:
                    return base
            time.sleep(0.1)
        raise RuntimeError("the API did not become ready")

    def start_workers(self, url: str, count: int, **extra: str) -> list[subprocess.Popen[bytes]]:
        return [self.spawn("worker", self.env(url, **extra)) for _ in range(count)]

    def stop(self, children: list[subprocess.Popen[bytes]]) -> None:
        for child in children:
            if child.poll() is None:
                child.terminate()
        for child in children:
            try:
                child.wait(30)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
            with contextlib.suppress(ValueError):
                self.children.remove(child)

    def close(self) -> None:
        self.stop(list(self.children))
        with contextlib.suppress(Exception):
            self.nats.stop()
        with contextlib.suppress(Exception):
            self.pg.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    def token(self, tenant: str, roles: tuple[str, ...] = ("scheduler.editor",)) -> str:
        from api.devmode import mint_dev_token

        return mint_dev_token(self.dev_dir, [tenant], list(roles))


@contextlib.contextmanager
def timed() -> Iterator[list[float]]:
    box: list[float] = []
    start = time.perf_counter()
    try:
        yield box
    finally:
        box.append(time.perf_counter() - start)


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def tree_cpu_seconds(root_pid: int) -> float:
    """CPU of ``root_pid`` and its children (a postmaster and its backends)."""
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue
        pid = int(stat.parent.name)
        if pid == root_pid or int(fields[1]) == root_pid:
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def postmaster_pid(lab: Lab) -> int:
    return int((lab.pg.pgdata / "postmaster.pid").read_text().split()[0])
