"""The Dockerfile, .dockerignore and docker-compose.yml, checked by reading them (no Docker engine here; `make lint`
runs hadolint on the Dockerfile)."""

from __future__ import annotations

import fnmatch
import importlib.util
import re
import tomllib
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest
import yaml

from shared.secrets import KeyRing
from shared.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = (ROOT / "Dockerfile").read_text()
MODULES = ["api", "worker", "shared.db.migrate"]


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined, comments dropped."""
    lines = [line for line in DOCKERFILE.splitlines() if not line.lstrip().startswith("#")]
    text = re.sub(r"\\\n", " ", "\n".join(lines))
    return [(m.group(1).upper(), m.group(2).strip()) for m in re.finditer(r"^\s*([A-Za-z]+)\s+(.*)$", text, re.M)]


def final_stage() -> list[tuple[str, str]]:
    steps = instructions()
    last_from = max(i for i, (op, _) in enumerate(steps) if op == "FROM")
    return steps[last_from:]


def compose() -> dict[str, Any]:
    loaded = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert isinstance(loaded, dict)
    return loaded


def test_every_stage_is_python_311_slim():
    bases = [args.split()[0] for op, args in instructions() if op == "FROM"]
    assert len(bases) >= 2, "multi-stage: a build stage and a runtime stage"
    assert set(bases) == {"python:3.11-slim"}


def test_runtime_stage_runs_unprivileged_modules():
    stage = final_stage()
    users = [args for op, args in stage if op == "USER"]
    assert users and users[-1].split(":")[0] == "10001"
    assert ("ENTRYPOINT", '["python", "-m"]') in stage
    assert ("CMD", '["api"]') in stage
    assert not any(op == "HEALTHCHECK" for op, _ in stage), "Kubernetes probes do that"
    assert any(op == "COPY" and "/opt/venv" in args for op, args in stage)


def test_the_project_is_installed_without_extras_and_with_its_migrations():
    runs = " ".join(args for op, args in instructions() if op == "RUN")
    assert "pip install --no-cache-dir ." in runs
    assert "[dev]" not in DOCKERFILE and "[embedded]" not in DOCKERFILE
    assert "-e ." not in runs and "--editable" not in runs
    # The migrations are part of the installed package; the build checks the installed copy has them.
    assert ("COPY", "sql/ sql/") in instructions()
    assert "python -I -c 'from shared.db.migrate import migration_files" in runs
    assert "devstack" not in DOCKERFILE and "bench" not in DOCKERFILE


@pytest.mark.parametrize("module", MODULES)
def test_entrypoint_modules_exist(module: str):
    spec = importlib.util.find_spec(module)
    assert spec is not None
    if module == "shared.db.migrate":
        assert re.search(r"^def main\(\) -> None:", Path(spec.origin or "").read_text(), re.M)
        assert 'if __name__ == "__main__":' in Path(spec.origin or "").read_text()
    else:
        assert importlib.util.find_spec(f"{module}.__main__") is not None


def test_migrations_are_read_from_the_package():
    from shared.db import migrate

    assert migrate.SQL_DIR.resolve() == (Path(__file__).resolve().parents[2] / "sql").resolve()
    assert [p.name for p in migrate.migration_files()] == sorted(p.name for p in (ROOT / "sql").glob("0*.sql"))


def test_every_runtime_package_is_listed_and_dev_tooling_is_not():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    on_disk = {
        ".".join(init.parent.relative_to(ROOT).parts)
        for top in ("api", "worker", "shared", "schedctl")
        for init in (ROOT / top).rglob("__init__.py")
    }
    assert on_disk | {"shared.db.migrations"} == listed
    assert config["package-dir"] == {"shared.db.migrations": "sql"}
    assert not any(name.startswith(("devstack", "bench", "tests")) for name in listed)


def test_the_wheel_ships_the_migrations_and_no_dev_tooling(tmp_path: Path):
    import subprocess
    import sys
    import zipfile

    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(ROOT)],
        capture_output=True,
        text=True,
    )
    assert built.returncode == 0, built.stderr
    (wheel,) = tmp_path.glob("*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "shared/db/migrations/0001_init.sql" in names and "shared/db/queries.sql" in names
    assert not [n for n in names if n.startswith(("devstack/", "bench/", "tests/"))]
    assert "schedctl/commands.py" in names


def ignored(path: str, patterns: list[str]) -> bool:
    """Close enough to Docker's rules for these patterns: last match wins, `!` re-includes."""
    result = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").rstrip("/")
        parts = path.split("/")
        candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        if any(fnmatch.fnmatch(c, pattern) or fnmatch.fnmatch(c, pattern.replace("**/", "")) for c in candidates):
            result = not negate
    return result


def test_dockerignore_keeps_out_local_state_and_keeps_the_sources():
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    for path in [".venv", ".data", ".git", ".env", ".pytest_cache", ".mypy_cache", ".ruff_cache", ".hypothesis"]:
        assert ignored(path, patterns), path
    assert ignored("shared/__pycache__/x.pyc", patterns)
    sources = [args.split()[0] for op, args in instructions() if op == "COPY" and not args.startswith("--from")]
    assert sources
    for source in sources:
        assert not ignored(source.rstrip("/"), patterns), f"{source} is COPY'd but ignored"


def test_compose_services():
    services = compose()["services"]
    assert services["postgres"]["image"] == "postgres:16"
    assert "healthcheck" in services["postgres"]
    assert services["nats"]["image"] == "nats:2"
    assert "-js" in services["nats"]["command"]
    migrate = " ".join(services["migrate"]["entrypoint"] + services["migrate"]["command"])
    assert "python -m shared.db.migrate && python -m shared.db.logins" in migrate
    # The API and the workers log in as their own roles, never the owner (RESET ROLE must reach nothing).
    assert "scheduler_api_login" in services["api"]["environment"]["POSTGRES_URL"]
    assert "scheduler_worker_login" in services["worker"]["environment"]["POSTGRES_URL"]
    assert "scheduler_api_login" in migrate and "scheduler_worker_login" in migrate
    assert services["migrate"]["restart"] == "no"
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert services["api"]["command"] == ["api"]
    assert services["api"]["ports"] == ["3080:3080"]
    assert services["worker"]["command"] == ["worker"]
    assert services["worker"]["deploy"]["replicas"] == 2
    for name in ("api", "worker"):
        assert services[name]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"


def default_of(value: str) -> str:
    """The value compose uses when the variable is unset: `${NAME:-default}` → default."""
    match = re.fullmatch(r"\$\{[A-Z_]+:-(.*)\}", value)
    return match.group(1) if match else value


def test_compose_environment():
    services = compose()["services"]
    settings = {f.name.upper() for f in fields(Settings)}
    for name in ("migrate", "api", "worker"):
        env = services[name]["environment"]
        assert set(env) <= settings, set(env) - settings
        assert {"POSTGRES_URL", "NATS_URL", "SECRETS_KEY"} <= set(env)
        assert services[name]["image"] == "scheduler:latest"
        assert services[name]["read_only"] is True
    api_env = services["api"]["environment"]
    assert api_env["HOST"] == "0.0.0.0"
    assert api_env["PORT"] == "3080"
    # The defaults must start the stack: a valid key ring, and dev mode unless a JWKS URL is given.
    KeyRing.parse(default_of(api_env["SECRETS_KEY"]))
    assert default_of(api_env["AUTH_MODE"]) == "dev"
    assert api_env["DEV_DATA_DIR"].startswith("/tmp/"), "the root filesystem is read-only"
    Settings.from_env({k: default_of(str(v)) for k, v in api_env.items()})


def test_compose_warns_about_the_placeholders():
    text = (ROOT / "docker-compose.yml").read_text()
    assert re.search(r"#.*CHANGE ME", text)
    assert re.search(r"#.*AUTH_MODE=dev", text)
    assert re.search(r"#.*JWKS_URL", text)
