"""The web console and the API docs in a real headless Chromium (Debian's, driven by chromedriver), against the
real API, Postgres, NATS and a worker process. Only loopback resolves in the browser, and every answer carries
``Content-Security-Policy: default-src 'self'``: a page that needs a CDN or an inline script fails here."""

from __future__ import annotations

import base64
import dataclasses
import os
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

from api.app import create_app
from api.auth import EDITOR, VIEWER
from api.devmode import mint_dev_token
from shared.settings import Settings
from tests.integration.live import chromium, serve, skip_or_fail_without_browser, with_csp, worker_process

ROOT = Path(__file__).resolve().parents[2]
# `make screenshots` points this at docs/screenshots; otherwise they go to a scratch folder of this process (a
# fixed /tmp name would be another user's on a shared machine).
SHOTS = Path(os.environ.get("CONSOLE_SCREENSHOTS") or tempfile.mkdtemp(prefix="scheduler-console-screenshots-"))
TIMEOUT = 20


@pytest.fixture(scope="module")
def stack(settings: Settings, nats_url: str) -> Iterator[str]:
    skip_or_fail_without_browser()
    live = dataclasses.replace(settings, nats_url=nats_url, tenant_rate_limit_rps=1e6, tenant_rate_limit_burst=1e6)
    with worker_process(live, nats_url), serve(with_csp(create_app(live))) as base:
        yield base


@pytest.fixture(scope="module")
def browser(stack: str) -> Iterator[Any]:
    with chromium() as driver:
        yield driver


def wait_for(driver: Any, condition: Callable[[Any], Any], timeout: float = TIMEOUT, what: str = "") -> Any:
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.support.ui import WebDriverWait

    # The console re-renders parts of the page (live preview, runs being followed): retry on stale elements.
    wait = WebDriverWait(driver, timeout, poll_frequency=0.1, ignored_exceptions=[StaleElementReferenceException])
    return wait.until(condition, what)


def by(driver: Any, testid: str) -> Any:
    from selenium.webdriver.common.by import By

    return wait_for(
        driver,
        lambda d: next(
            (e for e in d.find_elements(By.CSS_SELECTOR, f'[data-testid="{testid}"]') if e.is_displayed()), None
        ),
        what=f"[data-testid={testid}] to show",
    )


def all_by(driver: Any, testid: str) -> list[Any]:
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By

    for _ in range(20):
        try:
            return [e for e in driver.find_elements(By.CSS_SELECTOR, f'[data-testid="{testid}"]') if e.is_displayed()]
        except StaleElementReferenceException:
            time.sleep(0.05)
    raise AssertionError(f"[data-testid={testid}] kept being replaced")


def type_into(element: Any, text: str) -> None:
    element.clear()
    element.send_keys(text)


def shot(driver: Any, name: str, max_height: int = 1800, full_page: bool = True) -> None:
    """The whole page (up to ``max_height`` CSS pixels), or only the window (a modal dialog's backdrop covers
    only the window)."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    if not full_page:
        driver.save_screenshot(str(SHOTS / f"{name}.png"))
        return
    size = driver.execute_cdp_cmd("Page.getLayoutMetrics", {})["cssContentSize"]
    clip = {"x": 0, "y": 0, "width": size["width"], "height": min(size["height"], max_height), "scale": 1}
    png = driver.execute_cdp_cmd(
        "Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True, "clip": clip}
    )
    (SHOTS / f"{name}.png").write_bytes(base64.b64decode(png["data"]))


def console_problems(driver: Any) -> list[str]:
    """Errors the page logged (CSP violations, failed loads, uncaught exceptions); 4xx answers the console
    shows on purpose are not errors."""
    entries = driver.get_log("browser")
    return [
        e["message"]
        for e in entries
        if e["level"] == "SEVERE" and "the server responded with a status of 4" not in e["message"]
    ]


def sign_in(driver: Any, base: str, token: str, tenant: str) -> None:
    driver.get(f"{base}/console/")
    driver.execute_script("sessionStorage.clear()")
    driver.get(f"{base}/console/#/login")
    type_into(by(driver, "token"), token)
    type_into(by(driver, "tenant"), tenant)
    by(driver, "sign-in").click()
    wait_for(driver, lambda d: d.current_url.endswith("#/schedules"), what="the schedules list after sign-in")


def api(base: str, method: str, path: str, token: str, tenant: str, body: object = None) -> Any:
    request = urllib.request.Request(
        f"{base}{path}",
        method=method,
        data=None if body is None else msgspec.json.encode(body),
        headers={"Authorization": f"Bearer {token}", "X-Tenant-Id": tenant, "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        raw = response.read()
    return msgspec.json.decode(raw) if raw else None


@pytest.fixture
def tenant() -> str:
    return f"c-{uuid.uuid4().hex[:8]}"


def test_editor_creates_a_berlin_cron_sees_dst_on_the_timeline_and_runs_it(browser, stack, dev_dir, tenant):
    from selenium.webdriver.support.ui import Select

    token = mint_dev_token(dev_dir, [tenant], [EDITOR], subject="ada")
    sign_in(browser, stack, token, tenant)
    assert by(browser, "role").text == "editor"
    assert "token" not in browser.current_url.lower() and token not in browser.current_url
    by(browser, "empty")
    by(browser, "new-schedule").click()

    # Live validation: a broken expression is named next to its field before anything is saved.
    type_into(by(browser, "field-name"), "berlin-report")
    Select(by(browser, "field-target.kind")).select_by_value("EVENT")
    type_into(by(browser, "field-target.eventTopic"), f"{tenant}.reports")
    type_into(by(browser, "field-tz"), "Europe/Berlin")
    type_into(by(browser, "field-trigger.cron"), "0 9 32 * *")
    error = by(browser, "error-trigger.cron")
    wait_for(browser, lambda d: error.text.strip(), what="a field error for trigger.cron")
    type_into(by(browser, "field-tz"), "Mars/Olympus")
    wait_for(browser, lambda d: by(d, "error-tz").text.strip(), what="a field error for tz")
    type_into(by(browser, "field-tz"), "Europe/Berlin")

    # The 1st and 15th at 09:00: twelve fire times span six months, so the preview crosses a DST change.
    type_into(by(browser, "field-trigger.cron"), "0 9 1,15 * *")
    wait_for(browser, lambda d: len(all_by(d, "fire-time")) == 12, what="12 fire times in the live preview")
    assert not all_by(browser, "error-trigger.cron")
    assert all_by(browser, "dst-marker"), "the live preview marks the DST change"
    type_into(by(browser, "field-labels"), "team=data\nenv=test")
    shot(browser, "console-create")
    by(browser, "save").click()

    wait_for(browser, lambda d: "/schedules/" in d.current_url, what="the new schedule's page")
    assert by(browser, "schedule-name").text.startswith("berlin-report")
    timeline = by(browser, "timeline")
    wait_for(browser, lambda d: len(all_by(d, "fire-time")) == 30, what="30 fire times on the schedule page")
    markers = all_by(browser, "dst-marker")
    assert markers, "the schedule's timeline marks a DST change"
    assert int(timeline.get_attribute("data-transitions")) >= 1
    from selenium.webdriver.common.by import By

    assert browser.find_elements(By.CSS_SELECTOR, '[data-testid="dst-line"]'), "and draws it on the time axis"
    assert "UTC+01:00 → UTC+02:00" in " ".join(m.text for m in markers) or "UTC+02:00 → UTC+01:00" in " ".join(
        m.text for m in markers
    )

    by(browser, "run-now").click()
    wait_for(
        browser,
        lambda d: any(r.get_attribute("data-status") == "SUCCEEDED" for r in all_by(d, "run-row")),
        timeout=30,
        what="the manual run to succeed (delivered by the worker to NATS)",
    )
    row = all_by(browser, "run-row")[0]
    assert "manual" in row.text and "SUCCEEDED" in row.text
    shot(browser, "console-schedule")

    # Pause and resume go through If-Match; the list filters by status and labels.
    by(browser, "pause").click()
    wait_for(browser, lambda d: "PAUSED" in by(d, "schedule-name").text, what="the schedule paused")
    by(browser, "resume").click()
    wait_for(browser, lambda d: "ACTIVE" in by(d, "schedule-name").text, what="the schedule resumed")
    by(browser, "nav-schedules").click()
    wait_for(browser, lambda d: len(all_by(d, "schedule-row")) == 1, what="the list")
    shot(browser, "console-list")
    Select(by(browser, "status-filter")).select_by_value("PAUSED")
    by(browser, "empty")
    Select(by(browser, "status-filter")).select_by_value("")
    type_into(by(browser, "label-filter"), "team:ops")
    by(browser, "empty")
    type_into(by(browser, "label-filter"), "team:data")
    wait_for(browser, lambda d: len(all_by(d, "schedule-row")) == 1, what="the label filter to match")
    type_into(by(browser, "search"), "nomatch")
    by(browser, "empty")
    assert console_problems(browser) == []


def test_edit_shows_the_apis_field_errors_and_delete_asks_first(browser, stack, dev_dir, tenant):
    token = mint_dev_token(dev_dir, [tenant], [EDITOR])
    created = api(
        stack,
        "POST",
        "/schedules",
        token,
        tenant,
        {
            "name": "to-edit",
            "trigger": {"type": "CRON", "cron": "*/5 * * * *"},
            "target": {"kind": "EVENT", "eventTopic": "x.y"},
        },
    )
    sign_in(browser, stack, token, tenant)
    browser.get(f"{stack}/console/#/schedules/{created['id']}/edit")
    name = by(browser, "field-name")
    wait_for(browser, lambda d: name.get_attribute("value") == "to-edit", what="the form filled in")
    type_into(by(browser, "field-payload"), "{not json")
    wait_for(browser, lambda d: "JSON" in by(d, "error-payload").text, what="a local JSON error")
    type_into(by(browser, "field-payload"), '{"ok": true}')
    type_into(by(browser, "field-target.eventTopic"), "bad subject with spaces")
    by(browser, "save").click()
    wait_for(browser, lambda d: by(d, "error-target.eventTopic").text.strip(), what="the API's 400 next to the field")
    type_into(by(browser, "field-target.eventTopic"), "x.z")
    by(browser, "save").click()
    wait_for(browser, lambda d: d.current_url.endswith(created["id"]), what="the saved schedule")
    assert api(stack, "GET", f"/schedules/{created['id']}", token, tenant)["payload"] == {"ok": True}

    by(browser, "delete").click()
    by(browser, "confirm-delete")
    shot(browser, "console-delete", full_page=False)
    by(browser, "cancel-delete").click()
    assert by(browser, "schedule-name")
    by(browser, "delete").click()
    by(browser, "confirm-delete-button").click()
    wait_for(browser, lambda d: d.current_url.endswith("#/schedules"), what="back to the list")
    with pytest.raises(urllib.error.HTTPError) as gone:
        api(stack, "GET", f"/schedules/{created['id']}", token, tenant)
    gone.value.close()
    assert gone.value.code == 404
    assert console_problems(browser) == []


def test_viewer_sees_no_write_controls(browser, stack, dev_dir, tenant):
    editor = mint_dev_token(dev_dir, [tenant], [EDITOR])
    created = api(
        stack,
        "POST",
        "/schedules",
        editor,
        tenant,
        {
            "name": "read-me",
            "trigger": {"type": "CRON", "cron": "0 * * * *"},
            "target": {"kind": "EVENT", "eventTopic": "a.b"},
        },
    )
    sign_in(browser, stack, mint_dev_token(dev_dir, [tenant], [VIEWER]), tenant)
    assert by(browser, "role").text == "viewer"
    wait_for(browser, lambda d: len(all_by(d, "schedule-row")) == 1, what="the list")
    assert not all_by(browser, "new-schedule")
    browser.get(f"{stack}/console/#/schedules/{created['id']}")
    by(browser, "read-only")
    by(browser, "timeline")
    for control in ("write-controls", "run-now", "pause", "resume", "edit", "delete"):
        assert not all_by(browser, control), control
    browser.get(f"{stack}/console/#/new")
    wait_for(browser, lambda d: "read-only" in d.find_element("id", "main").text, what="the editor-only page refused")
    assert not all_by(browser, "schedule-form")


def test_tenant_switch_for_a_token_granting_several(browser, stack, dev_dir):
    from selenium.webdriver.support.ui import Select

    first, second = f"a-{uuid.uuid4().hex[:6]}", f"b-{uuid.uuid4().hex[:6]}"
    token = mint_dev_token(dev_dir, [first, second], [EDITOR])
    body = {"trigger": {"type": "CRON", "cron": "0 * * * *"}, "target": {"kind": "EVENT", "eventTopic": "a.b"}}
    api(stack, "POST", "/schedules", token, second, {"name": "only-in-second", **body})
    browser.get(f"{stack}/console/")
    browser.execute_script("sessionStorage.clear()")
    browser.get(f"{stack}/console/#/login")
    type_into(by(browser, "token"), token)
    Select(by(browser, "tenant")).select_by_value(first)
    by(browser, "sign-in").click()
    by(browser, "empty")
    Select(by(browser, "tenant-switch")).select_by_value(second)
    wait_for(browser, lambda d: len(all_by(d, "schedule-row")) == 1, what="the second tenant's schedule")
    assert browser.execute_script("return sessionStorage.getItem('scheduler.console.tenant')") == second
    assert "only-in-second" in by(browser, "schedules").text


def test_dev_mode_prefills_a_working_token(browser, stack):
    browser.get(f"{stack}/console/")
    browser.execute_script("sessionStorage.clear()")
    browser.get(f"{stack}/console/#/login")
    by(browser, "dev-note")
    token = by(browser, "token")
    wait_for(browser, lambda d: token.get_attribute("value").count(".") == 2, what="the dev token filled in")
    assert by(browser, "tenant").get_attribute("value") == "demo"
    shot(browser, "console-sign-in")
    by(browser, "sign-in").click()
    wait_for(browser, lambda d: d.current_url.endswith("#/schedules"), what="signed in with the dev token")
    assert by(browser, "role").text == "admin"


def test_swagger_ui_renders_every_operation_offline(browser, stack):
    from selenium.webdriver.common.by import By

    browser.get(f"{stack}/schema/swagger")
    wait_for(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, ".opblock")) >= 11, what="Swagger UI's operations")
    text = browser.find_element(By.CSS_SELECTOR, "#swagger-ui").text
    for operation_id in (
        "createSchedule",
        "listSchedules",
        "updateSchedule",
        "runSchedule",
        "listRuns",
        "previewTrigger",
    ):
        assert operation_id in text
    resources = browser.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    assert resources and all(r.startswith((stack, "data:")) for r in resources), resources
    shot(browser, "api-docs")
    # Swagger UI's stylesheet draws a few icons (select arrows) from data: URLs, which `default-src 'self'`
    # blocks; they are cosmetic (a policy for /schema may add `img-src 'self' data:`). Nothing else may fail.
    assert [p for p in console_problems(browser) if "Loading the image 'data:" not in p] == []


def test_time_zone_arithmetic_of_the_console(browser, stack):
    """The console's pure time functions, run in the browser's own Intl (its tz data is what users see)."""
    browser.get(f"{stack}/console/")
    result = browser.execute_async_script(
        """
        const done = arguments[arguments.length - 1];
        import("/console/lib/time.js").then((t) => {
          const at = (iso) => new Date(iso);
          const changes = (times, tz) => t.dstTransitions(times.map(at), tz).map((c) => ({
            index: c.index, from: c.from, to: c.to, at: c.at.toISOString() }));
          done({
            berlin: changes(["2027-03-27T08:00:00Z", "2027-03-28T07:00:00Z", "2027-10-30T07:00:00Z",
                             "2027-10-31T08:00:00Z"], "Europe/Berlin"),
            sydney: changes(["2027-04-03T10:00:00Z", "2027-04-04T10:00:00Z"], "Australia/Sydney"),
            lordHowe: changes(["2027-04-03T10:00:00Z", "2027-04-04T10:00:00Z"], "Australia/Lord_Howe"),
            kolkata: changes(["2027-01-01T00:00:00Z", "2027-07-01T00:00:00Z"], "Asia/Kolkata"),
            gap: t.fromWall("2027-03-28T02:30", "Europe/Berlin").toISOString(),
            overlap: t.fromWall("2027-10-31T02:30", "Europe/Berlin").toISOString(),
            plain: t.fromWall("2027-01-15T09:00", "America/New_York").toISOString(),
            wall: t.toWall(at("2027-07-01T07:00:00Z"), "Europe/Berlin"),
            label: t.offsetLabel(-210),
          });
        }, (err) => done({ error: String(err) }));
        """
    )
    assert result["berlin"] == [
        {"index": 1, "from": 60, "to": 120, "at": "2027-03-28T01:00:00.000Z"},
        {"index": 3, "from": 120, "to": 60, "at": "2027-10-31T01:00:00.000Z"},
    ]
    assert result["sydney"] == [{"index": 1, "from": 660, "to": 600, "at": "2027-04-03T16:00:00.000Z"}]
    assert result["lordHowe"] == [{"index": 1, "from": 660, "to": 630, "at": "2027-04-03T15:00:00.000Z"}]
    assert result["kolkata"] == []
    assert result["gap"] == "2027-03-28T01:30:00.000Z"  # 02:30 does not exist that night: 03:30 CEST
    assert result["overlap"] == "2027-10-31T00:30:00.000Z"  # 02:30 happens twice: the first (CEST) one
    assert result["plain"] == "2027-01-15T14:00:00.000Z"
    assert result["wall"] == "2027-07-01T09:00"
    assert result["label"] == "UTC-03:30"


def test_a_token_the_api_stops_accepting_ends_the_session(browser, stack, dev_dir, tenant):
    token = mint_dev_token(dev_dir, [tenant], [EDITOR])
    sign_in(browser, stack, token, tenant)
    by(browser, "empty")
    requested = browser.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    assert requested and not any(token in url or token[-20:] in url for url in requested), "the token is never in a URL"
    assert browser.execute_script("return Object.keys(localStorage).length") == 0
    # Same claims, broken signature: the console cannot tell, the API can.
    browser.execute_script("sessionStorage.setItem('scheduler.console.token', arguments[0])", token[:-6] + "AAAAAA")
    browser.refresh()
    assert "Sign in again" in by(browser, "login-reason").text
    assert browser.execute_script("return sessionStorage.getItem('scheduler.console.token')") is None
    assert not all_by(browser, "sign-out")
