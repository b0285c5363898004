"""The embedded PostgreSQL and NATS servers used by `make run` / `make test` (devstack)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import nats
import psycopg
import pytest

from devstack.nats import EmbeddedNats
from devstack.postgres import EmbeddedPostgres
from devstack.processes import free_port, pid_alive, port_accepts, wait_until

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def work_dir() -> Iterator[Path]:
    # Not tmp_path: as root, postgres runs as a user who cannot enter /tmp/pytest-of-root (0700).
    path = Path(tempfile.mkdtemp(prefix="dev-servers-", dir="/tmp"))
    path.chmod(0o755)
    yield path
    # A failed test must not leave servers behind.
    for pgdata in path.glob("**/pgdata"):
        EmbeddedPostgres(pgdata.parent).stop()
    for nats_log in path.glob("**/nats.log"):
        EmbeddedNats(nats_log.parent).stop()
    shutil.rmtree(path, ignore_errors=True)


def postmaster_pid(pg: EmbeddedPostgres) -> int:
    return int((pg.pgdata / "postmaster.pid").read_text().splitlines()[0])


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1].split("/")[0])


def processes_using(path: Path) -> list[int]:
    """Live processes whose command line mentions ``path`` (Linux only; elsewhere an empty list)."""
    pids = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            mentions = str(path).encode() in cmdline.read_bytes()
        except OSError:
            continue  # exited meanwhile
        pid = int(cmdline.parent.name)
        if mentions and pid != os.getpid() and pid_alive(pid):
            pids.append(pid)
    return pids


def run_and_sigkill_itself(code: str, data_dir: Path) -> str:
    """Run ``code`` (which prints a URL) in a child Python that then dies by SIGKILL; return the URL."""
    script = "\n".join(
        ["import os, signal, sys", "from pathlib import Path", code, "os.kill(os.getpid(), signal.SIGKILL)"]
    )
    child = subprocess.run(
        [sys.executable, "-c", script, str(data_dir)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert child.returncode == -signal.SIGKILL, child.stderr
    return child.stdout.strip()


# --- PostgreSQL --------------------------------------------------------------------------------------------


def test_postgres_starts_stops_and_keeps_data_across_restarts(work_dir: Path) -> None:
    pg = EmbeddedPostgres(work_dir / "pg")
    url = pg.start()
    port = port_of(url)
    assert url == f"postgresql://postgres@127.0.0.1:{port}/postgres" == pg.url
    with psycopg.connect(url) as conn:
        assert conn.execute("select 1").fetchone() == (1,)
        conn.execute("create table kept (value text)")
        conn.execute("insert into kept values ('survives')")
    assert pg.start() == url, "start() on a running server reuses it"

    pid = postmaster_pid(pg)
    pg.stop()
    assert not port_accepts(port)
    assert not pid_alive(pid)
    pg.stop()  # stopping a stopped server is fine

    restarted = EmbeddedPostgres(work_dir / "pg")
    assert restarted.start() == url, "the remembered port is reused when free"
    with psycopg.connect(url) as conn:
        assert conn.execute("select value from kept").fetchall() == [("survives",)]
    restarted.stop()
    assert not port_accepts(port)


def test_postgres_reuses_a_server_whose_owner_was_sigkilled(work_dir: Path) -> None:
    data_dir = work_dir / "pg"
    url = run_and_sigkill_itself(
        "from devstack.postgres import EmbeddedPostgres\n"
        "print(EmbeddedPostgres(Path(sys.argv[1])).start(), flush=True)",
        data_dir,
    )
    pg = EmbeddedPostgres(data_dir)
    orphan = postmaster_pid(pg)
    assert pid_alive(orphan), "the postmaster outlives its owner"

    assert pg.start() == url
    assert postmaster_pid(pg) == orphan, "reused, not restarted"
    with psycopg.connect(url) as conn:
        assert conn.execute("select 1").fetchone() == (1,)

    pg.stop()
    assert not pid_alive(orphan)
    assert not port_accepts(port_of(url))
    assert processes_using(pg.pgdata) == []


def test_postgres_restarts_after_the_postmaster_itself_was_sigkilled(work_dir: Path) -> None:
    pg = EmbeddedPostgres(work_dir / "pg")
    url = pg.start()
    with psycopg.connect(url) as conn:
        conn.execute("create table kept (value int)")
        conn.execute("insert into kept values (1)")
    killed = postmaster_pid(pg)
    os.kill(killed, signal.SIGKILL)
    assert wait_until(lambda: not pid_alive(killed), timeout=5)  # SIGKILL is delivered asynchronously

    # Its postmaster.pid and socket lock stay behind, naming a pid that may linger as an unreaped zombie.
    restarted = EmbeddedPostgres(work_dir / "pg")
    assert restarted.start() == url
    assert postmaster_pid(restarted) != killed
    with psycopg.connect(url) as conn:
        assert conn.execute("select value from kept").fetchall() == [(1,)]
    restarted.stop()


def test_postgres_creates_databases_from_a_template(work_dir: Path) -> None:
    port = free_port()
    with EmbeddedPostgres(work_dir / "pg", port=port, throwaway=True) as pg:
        assert pg.url == f"postgresql://postgres@127.0.0.1:{port}/postgres"
        template_url = pg.create_database("schema_template")
        assert template_url == f"postgresql://postgres@127.0.0.1:{port}/schema_template"
        with psycopg.connect(template_url) as conn:
            conn.execute("create table jobs (id int)")
            conn.execute("insert into jobs values (7)")
        # A template must have no open connections while it is copied: the `with` above closed ours.
        copy_url = pg.create_database("test_1", template="schema_template")
        with psycopg.connect(copy_url) as conn:
            assert conn.execute("select id from jobs").fetchall() == [(7,)]
    assert not port_accepts(port)
    assert not (work_dir / "pg").exists(), "throwaway deletes its data dir"


def test_postgres_start_failure_reports_the_server_log(work_dir: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        pg = EmbeddedPostgres(work_dir / "pg", port=port, throwaway=True)
        with pytest.raises(RuntimeError, match="Address already in use") as failure:
            pg.start()
    assert "last lines of" in str(failure.value)
    pg.stop()
    assert not (work_dir / "pg").exists()


def test_postgres_socket_moves_out_of_a_data_dir_too_deep_for_unix_sockets(work_dir: Path) -> None:
    # Unix socket paths are limited to 107 bytes; the TCP URL must not care.
    pg = EmbeddedPostgres(work_dir / ("d" * 100) / "pg", throwaway=True)
    url = pg.start()
    socket_dir = Path((pg.pgdata / "postmaster.pid").read_text().splitlines()[4])
    assert socket_dir != pg.data_dir
    with psycopg.connect(url) as conn:
        assert conn.execute("select 1").fetchone() == (1,)
    pg.stop()
    assert not socket_dir.exists(), "the short socket dir is removed on stop"


@pytest.mark.skipif(os.geteuid() != 0, reason="only root hands postgres to an unprivileged user")
def test_postgres_as_root_names_the_folder_its_user_cannot_enter(work_dir: Path) -> None:
    private = work_dir / "private"
    private.mkdir(mode=0o700)
    with pytest.raises(RuntimeError, match=f"may not enter {private}"):
        EmbeddedPostgres(private / "pg").start()
    assert private.stat().st_mode & 0o777 == 0o700, "the user's folders are left alone"


# --- NATS --------------------------------------------------------------------------------------------------


async def test_nats_jetstream_works_and_keeps_streams_across_restarts(work_dir: Path) -> None:
    server = EmbeddedNats(work_dir / "nats")
    url = server.start()
    assert url.startswith("nats://127.0.0.1:") and url == server.url
    assert server.start() == url, "start() on a running server reuses it"

    client = await nats.connect(url)
    js = client.jetstream()
    await js.add_stream(name="FIRES", subjects=["fires.>"])
    ack = await js.publish("fires.job-1", b"fired")
    assert (ack.stream, ack.seq) == ("FIRES", 1)
    await client.close()

    server.stop()
    assert not port_accepts(port_of(url))

    url = server.start()  # JetStream data persists in data_dir
    client = await nats.connect(url)
    info = await client.jetstream().stream_info("FIRES")
    assert info.state.messages == 1
    await client.close()
    server.stop()


async def test_nats_reuses_a_server_whose_owner_was_sigkilled(work_dir: Path) -> None:
    data_dir = work_dir / "nats"
    url = run_and_sigkill_itself(
        "from devstack.nats import EmbeddedNats\nprint(EmbeddedNats(Path(sys.argv[1])).start(), flush=True)",
        data_dir,
    )
    orphan = int((data_dir / "nats-server.pid").read_text())
    assert pid_alive(orphan), "the server outlives its owner"

    with EmbeddedNats(data_dir, throwaway=True) as server:
        assert server.url == url
        client = await nats.connect(url)
        await client.jetstream().add_stream(name="FIRES", subjects=["fires.>"])
        await client.close()
    assert not pid_alive(orphan)
    assert not port_accepts(port_of(url))
    assert not data_dir.exists()


def test_nats_start_failure_reports_the_server_log(work_dir: Path) -> None:
    data_dir = work_dir / "nats"
    data_dir.mkdir()
    (data_dir / "jetstream").touch()  # JetStream cannot store into a file
    with pytest.raises(RuntimeError, match="storage directory is not a directory"):
        EmbeddedNats(data_dir).start()
