"""dstPolicy and explained previews through the API against a real Postgres."""

from __future__ import annotations

import pytest

from api.auth import VIEWER
from tests.integration.conftest import Headers

pytestmark = pytest.mark.asyncio

SPRING_2030 = "2030-03-31"  # Europe/Berlin: 02:00 -> 03:00 CEST at 01:00Z
AUTUMN_2030 = "2030-10-27"  # Europe/Berlin: 03:00 CEST -> 02:00 CET at 01:00Z


def body(name: str, trigger: dict[str, object]) -> dict[str, object]:
    return {
        "name": name,
        "tz": "Europe/Berlin",
        "trigger": trigger,
        "target": {"kind": "EVENT", "eventTopic": "reports.nightly"},
    }


async def create(client, headers: Headers, payload: dict[str, object]) -> dict:
    response = await client.post("/schedules", json=payload, headers=headers())
    assert response.status_code == 201, response.text
    return response.json()


def assert_400(response, field: str) -> dict:
    assert response.status_code == 400, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    problem = response.json()
    assert field in [e["field"] for e in problem["errors"]], problem
    return problem


async def test_a_stored_dst_policy_drives_the_preview_and_is_explained(client, headers):
    trigger = {
        "type": "CRON",
        "cron": "30 2 * * *",
        "startAt": "2030-03-30T00:00:00Z",
        "dstPolicy": {"gap": "SKIP", "overlap": "BOTH"},
    }
    created = await create(client, headers, body("skip-both", trigger))
    assert created["trigger"]["dstPolicy"] == {"gap": "SKIP", "overlap": "BOTH"}
    fetched = (await client.get(f"/schedules/{created['id']}", headers=headers(VIEWER))).json()
    assert fetched["trigger"] == created["trigger"]

    plain = await client.get(f"/schedules/{created['id']}/preview?count=3", headers=headers(VIEWER))
    assert plain.status_code == 200, plain.text
    # SKIP: nothing on 2030-03-31. Without explain the answer is exactly the old shape.
    assert plain.json() == {"fireTimes": ["2030-03-30T01:30:00Z", "2030-04-01T00:30:00Z", "2030-04-02T00:30:00Z"]}

    response = await client.get(f"/schedules/{created['id']}/preview?count=3&explain=true", headers=headers(VIEWER))
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["fireTimes"] == plain.json()["fireTimes"]
    assert answer["dstPolicy"] == {"gap": "SKIP", "overlap": "BOTH"}
    first = answer["details"][0]
    assert first == {
        "at": "2030-03-30T01:30:00Z",
        "local": "2030-03-30T02:30:00+01:00",
        "matched": [
            'minute=30 (field "30")',
            'hour=2 (field "2")',
            'day-of-month=30 (field "*")',
            'month=MAR (field "*")',
            'day-of-week=SAT (field "*")',
        ],
    }
    assert all("dst" not in detail for detail in answer["details"])
    assert not any(t.startswith(SPRING_2030) for t in answer["fireTimes"])


async def test_overlap_both_fires_twice_and_says_which_copy(client, headers):
    trigger = {
        "type": "CRON",
        "cron": "30 2 * * *",
        "startAt": "2030-10-26T12:00:00Z",
        "dstPolicy": {"overlap": "BOTH"},
    }
    created = await create(client, headers, body("both", trigger))
    response = await client.get(f"/schedules/{created['id']}/preview?count=3&explain=true", headers=headers(VIEWER))
    answer = response.json()
    assert answer["fireTimes"] == ["2030-10-27T00:30:00Z", "2030-10-27T01:30:00Z", "2030-10-28T01:30:00Z"]
    assert answer["dstPolicy"] == {"gap": "SHIFT", "overlap": "BOTH"}
    first, second, third = answer["details"]
    assert (first["dst"], second["dst"], third.get("dst")) == ("OVERLAP_FIRST", "OVERLAP_SECOND", None)
    assert first["local"] == "2030-10-27T02:30:00+02:00" and second["local"] == "2030-10-27T02:30:00+01:00"
    assert second["reason"] == (
        f"02:30 occurs twice on {AUTUMN_2030} in Europe/Berlin (clocks go back 03:00→02:00); this is the second "
        "occurrence, after the first at 2030-10-27T02:30:00+02:00 (dstPolicy.overlap=BOTH)"
    )


async def test_trigger_preview_explains_a_shift_and_rrule_parts(client, headers):
    request = {
        "tz": "Europe/Berlin",
        "trigger": {"type": "CRON", "cron": "30 2 * * *", "dstPolicy": {"gap": "SHIFT"}},
        "after": "2026-03-28T12:00:00Z",
        "count": 2,
        "explain": True,
    }
    response = await client.post("/triggers/preview", json=request, headers=headers(VIEWER))
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["fireTimes"] == ["2026-03-29T01:00:00Z", "2026-03-30T00:30:00Z"]
    shifted = answer["details"][0]
    assert shifted["local"] == "2026-03-29T03:00:00+02:00" and shifted["dst"] == "SHIFTED"
    assert shifted["reason"] == (
        "02:30 does not exist on 2026-03-29 in Europe/Berlin (clocks jump 02:00→03:00); fired at the end of the "
        "gap (dstPolicy.gap=SHIFT)"
    )
    # Without explain: the old answer, unchanged.
    plain = await client.post("/triggers/preview", json={**request, "explain": False}, headers=headers(VIEWER))
    assert plain.json() == {"fireTimes": answer["fireTimes"]}

    rrule = {
        "tz": "UTC",
        "trigger": {
            "type": "RRULE",
            "rrule": "FREQ=MONTHLY;BYDAY=MO,TU,WE,TH,FR;BYSETPOS=-1;BYHOUR=17;COUNT=5",
            "startAt": "2026-01-01T00:00:00Z",
        },
        "after": "2026-01-01T00:00:00Z",
        "count": 2,
        "explain": True,
    }
    answer = (await client.post("/triggers/preview", json=rrule, headers=headers(VIEWER))).json()
    assert answer["fireTimes"] == ["2026-01-30T17:00:00Z", "2026-02-27T17:00:00Z"]
    assert answer["dstPolicy"] == {"gap": "SHIFT", "overlap": "FIRST"}
    matched = answer["details"][1]["matched"]
    assert matched[0] == "FREQ=MONTHLY period 2026-02"
    assert "set position 20 of 20 (matched -1 of BYSETPOS=-1)" in matched
    assert matched[-1] == "occurrence 2 of COUNT=5"


@pytest.mark.parametrize(
    ("policy", "field"),
    [
        ({"gap": "LATER"}, "trigger.dstPolicy.gap"),
        ({"overlap": "TWICE"}, "trigger.dstPolicy.overlap"),
        ({"gap": 1}, "trigger.dstPolicy.gap"),
        ({"gapp": "SKIP"}, "trigger.dstPolicy.gapp"),
        ("SKIP", "trigger.dstPolicy"),
    ],
)
async def test_a_bad_policy_is_a_400_naming_the_field(client, headers, policy, field):
    trigger = {"type": "CRON", "cron": "30 2 * * *", "dstPolicy": policy}
    assert_400(await client.post("/schedules", json=body("bad", trigger), headers=headers()), field)
    request = {"tz": "Europe/Berlin", "trigger": trigger}
    assert_400(await client.post("/triggers/preview", json=request, headers=headers(VIEWER)), field)


async def test_policy_only_on_calendar_triggers_and_checked_on_patch(client, headers):
    delay = {"type": "FIXED_DELAY", "delaySec": 60, "dstPolicy": {"gap": "SKIP"}}
    assert_400(await client.post("/schedules", json=body("delay", delay), headers=headers()), "trigger.dstPolicy")
    created = await create(client, headers, body("patched", {"type": "RRULE", "rrule": "FREQ=DAILY;BYHOUR=2"}))
    bad = {"trigger": {"type": "RRULE", "rrule": "FREQ=DAILY;BYHOUR=2", "dstPolicy": {"overlap": "ALL"}}}
    assert_400(
        await client.patch(f"/schedules/{created['id']}", json=bad, headers=headers()), "trigger.dstPolicy.overlap"
    )
    good = {"trigger": {"type": "RRULE", "rrule": "FREQ=DAILY;BYHOUR=2", "dstPolicy": {"overlap": "BOTH"}}}
    patched = await client.patch(f"/schedules/{created['id']}", json=good, headers=headers())
    assert patched.status_code == 200, patched.text
    assert patched.json()["trigger"]["dstPolicy"] == {"overlap": "BOTH"}
    # anchoring an RRULE at its edit keeps the policy
    assert patched.json()["trigger"]["startAt"]
    assert_400(
        await client.get(f"/schedules/{created['id']}/preview?explain=maybe", headers=headers(VIEWER)), "explain"
    )


async def test_explained_preview_of_another_tenants_schedule_is_404(client, headers, tenant):
    created = await create(client, headers, body("mine", {"type": "CRON", "cron": "0 9 * * *"}))
    other = headers(VIEWER, tenant_id=f"{tenant}-other")
    response = await client.get(f"/schedules/{created['id']}/preview?explain=true", headers=other)
    assert response.status_code == 404, response.text
