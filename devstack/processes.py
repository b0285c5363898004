"""Small process, port and log helpers shared by the embedded dev servers."""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

HOST = "127.0.0.1"


def pid_alive(pid: int) -> bool:
    """True if ``pid`` is a live process (zombies count as dead)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # it exists, it just belongs to another user (the unprivileged postgres user)
    # A server we orphaned is reparented to PID 1, which in containers often never reaps it: the zombie
    # still answers kill(0) but is gone for our purposes.
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no /proc (macOS) or it vanished meanwhile; kill(0) said it existed
    state = stat.rpartition(")")[2].split()[0]
    return state not in ("Z", "X")


def pid_runs(pid: int, argument: Path) -> bool:
    """True if ``pid`` is alive and, where /proc tells, has ``argument`` among its command-line arguments.

    Pid files outlive their servers, and after a reboot or in a new container the pid may belong to an
    unrelated process; the data directory among the arguments tells our server apart.
    """
    if not pid_alive(pid):
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return True  # no /proc (macOS) or hidden from us: trust the pid
    return os.fsencode(argument) in cmdline.split(b"\0")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def port_is_free(port: int) -> bool:
    """True if a server could bind 127.0.0.1:``port`` now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # Servers set SO_REUSEADDR, so leftover TIME_WAIT connections must not make the port look taken.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
        return True


def port_accepts(port: int, timeout: float = 0.5) -> bool:
    """True if something accepts TCP connections on 127.0.0.1:``port``."""
    try:
        with socket.create_connection((HOST, port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_until(condition: Callable[[], bool], timeout: float, interval: float = 0.02) -> bool:
    """Poll ``condition`` until it holds or ``timeout`` seconds pass; returns its last value."""
    deadline = time.monotonic() + timeout
    while True:
        if condition():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


def log_excerpt(path: Path, lines: int = 20) -> str:
    """The last ``lines`` lines of a log file under a header, for error messages; never raises."""
    try:
        tail = path.read_text(errors="replace").splitlines()[-lines:]
    except OSError as exc:
        return f"--- no log at {path}: {exc} ---"
    return "\n".join([f"--- last lines of {path} ---", *tail])


@contextlib.contextmanager
def locked(path: Path, timeout: float = 60.0) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` so that two processes never start or stop one server at once."""
    with path.open("a") as handle:

        def try_lock() -> bool:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return False
            return True

        if not wait_until(try_lock, timeout, interval=0.05):
            raise RuntimeError(f"another process has held the lock {path} for over {timeout:.0f} s")
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
