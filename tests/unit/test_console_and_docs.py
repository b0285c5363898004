"""The OpenAPI document as client generators read it, the offline docs page and the console's files: checked on
the application object and its files (no database is reached; the browser tests drive the real thing)."""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from litestar import Litestar
from litestar.testing import TestClient

from api.app import create_app
from api.auth import tenant_in_scope
from api.console import STATIC
from api.openapi import DOCS_STATIC, Problem
from api.problems import handle_scheduler_error, handle_validation, problem
from shared.errors import Conflict, InvalidInput, NotFound, PreconditionFailed, TooManyRequests, Unauthenticated
from shared.secrets import KeyRing
from shared.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
UNREACHABLE_DB = "postgresql://127.0.0.1:1/none?connect_timeout=1"
CAMEL = re.compile(r"^[a-z][a-zA-Z0-9]*$")


# One private dev-data folder per test process: a fixed /tmp path would be another user's on a shared machine.
DEV_DATA = tempfile.mkdtemp(prefix="sched-unit-dev-")


def make_app(**overrides: Any) -> Litestar:
    base = {"postgres_url": UNREACHABLE_DB, "auth_mode": "dev", "dev_data_dir": DEV_DATA}
    return create_app(Settings(**{**base, **overrides}))


@pytest.fixture(scope="module")
def app() -> Litestar:
    return make_app()


@pytest.fixture(scope="module")
def doc(app: Litestar) -> dict[str, Any]:
    return msgspec.json.decode(msgspec.json.encode(app.openapi_schema.to_schema()))  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def http(app: Litestar) -> Iterator[TestClient]:
    with TestClient(app) as client:
        yield client


def operations(doc: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in doc["paths"].items():
        for method, op in item.items():
            yield path, method, op


def tenant_routes(app: Litestar) -> set[tuple[str, str]]:
    """(path, method) of every handler that resolves the tenant in scope, found from the handlers themselves."""
    found = set()
    for route in app.routes:
        for handler in getattr(route, "route_handlers", []):
            provider = handler.resolve_dependencies().get("tenant_id")
            if provider is not None and provider.dependency is tenant_in_scope:
                found.update((route.path_format, m.lower()) for m in handler.http_methods)
    return found


def test_operation_ids_are_readable_and_unique(doc):
    ids = [op["operationId"] for _, _, op in operations(doc)]
    assert len(ids) == len(set(ids))
    assert all(CAMEL.match(i) for i in ids), ids
    expected = {
        ("/schedules", "post"): "createSchedule",
        ("/schedules", "get"): "listSchedules",
        ("/schedules/{schedule_id}", "get"): "getSchedule",
        ("/schedules/{schedule_id}", "patch"): "updateSchedule",
        ("/schedules/{schedule_id}", "delete"): "deleteSchedule",
        ("/schedules/{schedule_id}/run", "post"): "runSchedule",
        ("/schedules/{schedule_id}/runs", "get"): "listRuns",
        ("/runs/{run_id}", "get"): "getRun",
        ("/triggers/preview", "post"): "previewTrigger",
    }
    for (path, method), operation_id in expected.items():
        assert doc["paths"][path][method]["operationId"] == operation_id


def test_every_tenant_route_declares_the_required_tenant_header(app, doc):
    routes = tenant_routes(app)
    assert len(routes) >= 10
    for path, method, op in operations(doc):
        headers = {p["name"]: p for p in op.get("parameters", []) if p["in"] == "header"}
        if (path, method) in routes:
            assert headers.get("X-Tenant-Id", {}).get("required") is True, (method, path)
        else:
            assert "X-Tenant-Id" not in headers, (method, path)


def test_every_error_status_a_route_can_answer_is_declared_as_problem_json(app, doc):
    routes = tenant_routes(app)
    problem_ref = {"$ref": "#/components/schemas/Problem"}
    for path, method, op in operations(doc):
        responses = op["responses"]
        for status, response in responses.items():
            if int(status) >= 400:
                assert response["content"] == {"application/problem+json": {"schema": problem_ref}}, (method, path)
        if op.get("security") == [] or path in {"/health", "/ready", "/live", "/dev/jwks.json"}:
            continue
        need = {"401", "403"}
        if (path, method) in routes:
            need |= {"400", "429", "503"}
        if "{" in path:
            need.add("404")
        if method in {"post", "patch"} and "requestBody" in op:
            need |= {"400", "413"}
        if method == "patch":
            need |= {"409", "412"}
        missing = need - set(responses)
        assert not missing, f"{method.upper()} {path} does not declare {sorted(missing)}"


def test_the_problem_schema_is_what_the_error_handlers_write():
    responses = [
        problem(404, "Not found", "no such schedule"),
        handle_scheduler_error(None, InvalidInput.field("trigger.cron", "bad minute")),  # type: ignore[arg-type]
        handle_scheduler_error(None, Conflict("name taken", field="name")),  # type: ignore[arg-type]
        handle_scheduler_error(None, PreconditionFailed()),  # type: ignore[arg-type]
        handle_scheduler_error(None, TooManyRequests(1.5)),  # type: ignore[arg-type]
        handle_scheduler_error(None, Unauthenticated("expired")),  # type: ignore[arg-type]
        handle_scheduler_error(None, NotFound()),  # type: ignore[arg-type]
    ]
    from litestar.exceptions import ValidationException

    responses.append(handle_validation(None, ValidationException(extra=[{"message": "x", "key": "page"}])))  # type: ignore[arg-type]
    for response in responses:
        body = msgspec.json.decode(response.content)
        assert set(body) <= set(Problem.__struct_fields__), body
        parsed = msgspec.convert(body, Problem)
        assert parsed.status == response.status_code
        assert response.media_type == "application/problem+json"


def test_swagger_ui_is_served_from_the_api_with_no_inline_script(http):
    page = http.get("/schema/swagger")
    assert page.status_code == 200
    html = page.text
    assert not re.search(r"https?://", html), "no CDN or other outside address"
    scripts = re.findall(r"<script([^>]*)>(.*?)</script>", html, re.S)
    assert scripts and all("src=" in attrs and not body.strip() for attrs, body in scripts)
    assert not re.search(r"\son[a-z]+=", html), "no inline event handlers"
    for asset in re.findall(r'(?:src|href)="([^"]+)"', html):
        assert http.get(asset).status_code == 200, asset
    assert http.get("/schema").text == html
    for gone in ("/schema/redoc", "/schema/elements", "/schema/rapidoc"):
        assert http.get(gone).status_code == 404


def test_console_is_public_static_and_csp_friendly(http):
    for path in ("/console", "/console/", "/console/app.js", "/console/views/timeline.js", "/console-config.json"):
        response = http.get(path)
        assert response.status_code == 200, path
    assert http.get("/console/app.js").headers["content-type"].startswith("text/javascript")
    assert http.get("/console/missing.js").status_code == 404
    assert http.get("/console/../api/auth.py").status_code in (400, 404)
    for file in STATIC.rglob("*"):
        if file.suffix not in {".html", ".js", ".css", ".svg"}:
            continue
        text = file.read_text()
        assert not re.search(r"""(?:src|href|import[^'"]*|url\()\s*=?\s*['"(]?https?://""", text), file
        assert "innerHTML" not in text and "eval(" not in text and "new Function" not in text, file
        assert "localStorage" not in text, "the token lives in sessionStorage only"
        if file.suffix == ".html":
            assert not re.search(r"<script(?![^>]*\ssrc=)[^>]*>", text), f"inline script in {file}"
            assert not re.search(r"\son[a-z]+=", text), f"inline handler in {file}"


def test_the_console_reads_claim_names_from_the_settings(http):
    config = http.get("/console-config.json").json()
    assert config == {"tenantsClaim": "tenants", "rolesClaim": "roles", "devToken": "/dev/token"}
    with TestClient(make_app(jwt_tenants_claim="org.tenants", jwt_roles_claim="realm_access.roles")) as client:
        config = client.get("/console-config.json").json()
    assert config["tenantsClaim"] == "org.tenants" and config["rolesClaim"] == "realm_access.roles"


def test_dev_token_exists_only_in_dev_mode(http):
    dev = http.get("/dev/token")
    assert dev.status_code == 200 and dev.json()["tenant"] == "demo" and dev.json()["token"].count(".") == 2
    assert dev.headers["cache-control"] == "no-store"
    production = make_app(
        auth_mode="jwks",
        jwt_audience="scheduler",
        jwks_url="http://127.0.0.1:1/jwks.json",
        secrets_key=KeyRing.new_key_spec("k1"),
    )
    with TestClient(production) as client:
        assert client.get("/dev/token").status_code == 404
        assert client.get("/console-config.json").json()["devToken"] is None
        assert client.get("/console/").status_code == 200
    assert not any(r.path == "/dev/token" for r in production.routes)


def test_the_wheel_ships_the_console_and_docs_files(tmp_path):
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        check=True,
        timeout=300,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("scheduler-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for folder, package in ((STATIC, "api/console/static"), (DOCS_STATIC, "api/docs")):
        for file in folder.rglob("*"):
            if file.is_file() and "__pycache__" not in file.parts:
                assert f"{package}/{file.relative_to(folder).as_posix()}" in names, file
