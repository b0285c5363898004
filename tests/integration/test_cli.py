"""schedctl, the installed console script, against a live API on a real socket and a real Postgres."""

from __future__ import annotations

import dataclasses
import json
import os
import stat
import subprocess
import sys
import sysconfig
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from api.app import create_app
from api.auth import EDITOR, VIEWER
from api.devmode import mint_dev_token
from shared.settings import Settings
from tests.integration.live import serve

SCHEDCTL = str(Path(sysconfig.get_path("scripts")) / "schedctl")


@pytest.fixture(scope="module")
def live_api(settings: Settings) -> Iterator[str]:
    unlimited = dataclasses.replace(settings, tenant_rate_limit_rps=1e6, tenant_rate_limit_burst=1e6)
    with serve(create_app(unlimited)) as base:
        yield base


Cli = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def cli(live_api: str, dev_dir: Path, tmp_path: Path) -> Cli:
    tenant = f"t-{uuid.uuid4().hex[:10]}"

    def run(*args: str, role: str = EDITOR, stdin: str | None = None, **env: str) -> subprocess.CompletedProcess[str]:
        token = mint_dev_token(dev_dir, [tenant], [role])
        environment = {
            "PATH": os.environ.get("PATH", ""),
            "HOME": str(tmp_path),
            "XDG_CONFIG_HOME": str(tmp_path / "config"),
            "SCHEDCTL_URL": live_api,
            "SCHEDCTL_TOKEN": token,
            "SCHEDCTL_TENANT": tenant,
            **env,
        }
        return subprocess.run(
            [SCHEDCTL, *args], capture_output=True, text=True, env=environment, input=stdin, timeout=60
        )

    run.tenant = tenant  # type: ignore[attr-defined]
    return run


SCHEDULE_YAML = """\
name: nightly-export
tz: Europe/Berlin
trigger: {type: CRON, cron: "30 2 * * *"}
target: {kind: EVENT, eventTopic: exports.nightly}
labels: {team: data}
"""


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, (result.returncode, result.stdout, result.stderr)
    return result.stdout


def test_console_script_is_installed():
    assert os.access(SCHEDCTL, os.X_OK), SCHEDCTL
    result = subprocess.run([sys.executable, "-m", "schedctl", "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "schedules" in result.stdout


def test_create_list_get_preview_run_and_delete(cli: Cli, tmp_path: Path):
    spec = tmp_path / "nightly.yaml"
    spec.write_text(SCHEDULE_YAML)
    created = json.loads(ok(cli("schedules", "create", "-f", str(spec), "--json")))
    assert len(created) == 1 and created[0]["name"] == "nightly-export"
    schedule_id = created[0]["id"]

    table = ok(cli("schedules", "list"))
    header, *rows = table.splitlines()
    assert header.split()[:3] == ["ID", "NAME", "STATUS"]
    assert len(rows) == 1 and schedule_id in rows[0] and "CRON 30 2 * * *" in rows[0]
    assert json.loads(ok(cli("schedules", "list", "--label", "team:other", "--json"))) == []

    by_name = json.loads(ok(cli("schedules", "get", "nightly-export", "--json")))
    assert by_name["id"] == schedule_id and by_name["tz"] == "Europe/Berlin"
    assert "nightly-export" in ok(cli("schedules", "get", schedule_id))

    times = ok(cli("schedules", "preview", schedule_id, "--count", "3")).split()
    assert len(times) == 3 and all(t.endswith(("+00:00", "Z")) for t in times)

    run = json.loads(ok(cli("schedules", "run", "nightly-export", "--json")))
    assert run["scheduleId"] == schedule_id and run["manual"] is True
    runs = json.loads(ok(cli("runs", "list", schedule_id, "--json")))
    assert [r["id"] for r in runs] == [run["id"]]
    assert run["id"] in ok(cli("runs", "get", run["id"]))

    refused = cli("schedules", "delete", schedule_id)  # no terminal, no --yes
    assert refused.returncode == 2 and "--yes" in refused.stderr
    ok(cli("schedules", "delete", schedule_id, "--yes"))
    gone = cli("schedules", "get", schedule_id)
    assert gone.returncode == 1 and "404" in gone.stderr


def test_preview_a_trigger_file_across_dst(cli: Cli, tmp_path: Path):
    spec = tmp_path / "trigger.yaml"
    spec.write_text('tz: Europe/Berlin\ntrigger: {type: CRON, cron: "0 9 * * *"}\nafter: "2026-03-27T00:00:00Z"\n')
    times = ok(cli("schedules", "preview", "-f", str(spec), "--count", "3")).split()
    # 09:00 Berlin is 08:00Z in winter and 07:00Z from 29 March (CEST).
    assert [t[:16] for t in times] == ["2026-03-27T08:00", "2026-03-28T08:00", "2026-03-29T07:00"]


def test_problem_json_errors_are_shown_with_their_fields(cli: Cli, tmp_path: Path):
    spec = tmp_path / "bad.yaml"
    spec.write_text("name: bad\ntrigger: {type: CRON, cron: '61 * * * *'}\ntarget: {kind: EVENT, eventTopic: x}\n")
    result = cli("schedules", "create", "-f", str(spec))
    assert result.returncode == 1
    assert "400" in result.stderr and "trigger.cron" in result.stderr

    viewer = cli("schedules", "create", "-f", str(spec), role=VIEWER)
    assert viewer.returncode == 1 and "403" in viewer.stderr

    broken = tmp_path / "broken.yaml"
    broken.write_text("name: [unclosed\n")
    assert cli("schedules", "create", "-f", str(broken)).returncode == 2
    assert cli("schedules", "create", "-f", str(tmp_path / "missing.yaml")).returncode == 2

    unreachable = cli("schedules", "list", SCHEDCTL_URL="http://127.0.0.1:9")
    assert unreachable.returncode == 1 and "Cannot reach the API" in unreachable.stderr


def test_login_stores_a_private_profile(cli: Cli, tmp_path: Path):
    result = cli("login")
    assert result.returncode == 0, result.stderr
    path = tmp_path / "config" / "schedctl" / "config.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    stored = json.loads(path.read_text())
    assert stored["tenant"] == cli.tenant  # type: ignore[attr-defined]
    # Later commands work from the stored profile alone.
    assert cli("schedules", "list", SCHEDCTL_TOKEN="", SCHEDCTL_TENANT="", SCHEDCTL_URL="").returncode == 0
    bad = cli("login", SCHEDCTL_TOKEN="not-a-jwt")
    assert bad.returncode == 1 and "401" in bad.stderr


def test_apply_is_idempotent_and_pause_resume_carry_a_reason(cli: Cli, tmp_path: Path):
    spec = tmp_path / "fleet.yaml"
    spec.write_text(
        SCHEDULE_YAML + "---\nname: hourly-sync\ntrigger: {type: CRON, cron: '0 * * * *'}\n"
        "target: {kind: EVENT, eventTopic: sync.hourly}\n"
    )
    first = cli("schedules", "apply", "-f", str(spec), "--json")
    applied = json.loads(ok(first))
    assert [s["name"] for s in applied] == ["nightly-export", "hourly-sync"]
    assert first.stderr.count("created") == 2
    again = cli("schedules", "apply", "-f", str(spec), "--json")
    assert again.stderr.count("updated") == 2
    assert [s["version"] for s in json.loads(ok(again))] == [s["version"] for s in applied]  # nothing changed

    spec.write_text(SCHEDULE_YAML.replace("30 2 * * *", "45 3 * * *"))
    changed = json.loads(ok(cli("schedules", "apply", "-f", str(spec), "--json")))
    assert changed[0]["id"] == applied[0]["id"] and changed[0]["version"] == applied[0]["version"] + 1

    paused = json.loads(ok(cli("schedules", "pause", "nightly-export", "--reason", "vendor outage", "--json")))
    assert paused["status"] == "PAUSED" and paused["pausedReason"] == "vendor outage" and paused["nextRunAt"] is None
    listed = ok(cli("schedules", "list", "--status", "PAUSED"))
    assert "nightly-export" in listed and "hourly-sync" not in listed
    resumed = json.loads(ok(cli("schedules", "resume", "nightly-export", "--json")))
    assert resumed["status"] == "ACTIVE" and resumed["nextRunAt"] is not None
