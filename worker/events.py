"""The lifecycle events' relay: the outbox (``schedule_events``, sql/0070) to each tenant's NATS event stream.

Triggers write an event row in the same transaction as the change it announces (API edits, a worker's advance
that exhausts a rule, a run's final status, a pause on failure). Every worker runs this relay; one at a time
holds the outbox (an advisory lock in the batch's transaction), publishes a batch in order through JetStream
with ``Nats-Msg-Id`` = the event id, and deletes the rows the streams acknowledged, in that transaction. A relay
that dies between the publish and the commit leaves the rows; the next one publishes them again with the same
ids, which the stream drops as duplicates within its window (and a consumer can drop by ``id`` after it).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from datetime import datetime
from typing import Any

import msgspec
from loguru import logger

from shared.db.repository import schedule_from_row
from shared.errors import Unavailable
from shared.messaging.subjects import Namespace
from shared.secrets import mask_target
from worker.fire import utc_iso
from worker.store import WorkerStore
from worker.targets.cloudevents import SOURCE
from worker.targets.nats import NatsPublisher

BATCH = 500
POLL_SEC = 0.2
# An event its tenant's stream did not take is left aside this long, so it cannot block the others behind it.
HOLD_SEC = 5.0
TOPIC_PREFIX = "scheduler."  # reserved in every tenant's namespace (shared/messaging/subjects.py)
EVENT_TYPES = (
    "schedule.created",
    "schedule.updated",
    "schedule.paused",
    "schedule.resumed",
    "schedule.deleted",
    "schedule.exhausted",
    "run.succeeded",
    "run.failed",
)

_JSON_COLUMNS = ("trigger", "target", "payload", "retry", "labels")
_TIME_COLUMNS = ("next_run_at", "last_run_at", "created_at", "updated_at", "paused_at")
_encode = msgspec.json.encode


class LifecycleEvent(msgspec.Struct):
    """CloudEvents 1.0 (structured JSON), with the ``tenantid`` and ``sequence`` extension attributes."""

    specversion: str
    id: str
    source: str
    type: str
    time: str
    subject: str
    datacontenttype: str
    tenantid: str
    sequence: str
    data: Any


def _json(value: Any) -> Any:
    return msgspec.json.decode(value) if isinstance(value, str | bytes) else value


def schedule_view(state: dict[str, Any]) -> dict[str, Any]:
    """A schedule row as ``to_jsonb`` stored it, shown as GET /schedules/{id} shows it (secrets masked)."""
    row = dict(state)
    for column in _JSON_COLUMNS:
        row[column] = _encode(row.get(column)).decode()
    for column in _TIME_COLUMNS:
        value = row.get(column)
        row[column] = datetime.fromisoformat(value) if isinstance(value, str) else None
    schedule = schedule_from_row(row)
    schedule = msgspec.structs.replace(schedule, target=mask_target(schedule.target), webhook_secret=None)
    view: dict[str, Any] = msgspec.to_builtins(schedule)
    view.pop("webhookSecret", None)
    return view


def render(row: dict[str, Any]) -> tuple[str, bytes]:
    """The subject topic and the CloudEvent of one outbox row."""
    # The worker's connections load JSON as text (decoded where needed, not on every claimed row).
    state = _json(row["state"])
    run = _json(row["run"])
    kind = row["type"]
    data = {
        "type": kind,
        "scheduleId": row["schedule_id"],
        "tenantId": row["tenant_id"],
        "version": state.get("version") if state else None,
        "actor": row["actor"],
        "reason": row["reason"],
        "schedule": schedule_view(state) if state else None,
        "run": run,
    }
    event = LifecycleEvent(
        specversion="1.0",
        id=row["id"],
        source=f"{SOURCE}/tenants/{row['tenant_id']}/schedules/{row['schedule_id']}",
        type=TOPIC_PREFIX + kind,
        time=utc_iso(row["at"]),
        subject=row["schedule_id"],
        datacontenttype="application/json",
        tenantid=row["tenant_id"],
        sequence=str(row["seq"]),
        data=data,
    )
    return TOPIC_PREFIX + kind, _encode(event)


class EventRelay:
    def __init__(self, store: WorkerStore, publisher: NatsPublisher, ns: Namespace, batch: int = BATCH) -> None:
        self.store = store
        self.publisher = publisher
        self.ns = ns
        self.batch = batch
        # seq -> monotonic time before which an event whose publish failed is not tried again
        self._held: dict[int, float] = {}

    async def _publish(self, rows: list[dict[str, Any]]) -> list[int]:
        messages = []
        for row in rows:
            topic, body = render(row)
            messages.append((row["tenant_id"], self.ns.event_subject(row["tenant_id"], topic), body, row["id"]))
        acked = await self.publisher.publish_stream_many(messages)
        failed = len(rows) - sum(acked)
        if failed:
            logger.warning("{} of {} lifecycle event(s) not acknowledged; publishing them again", failed, len(rows))
        retry_at = time.monotonic() + HOLD_SEC
        for row, ok in zip(rows, acked, strict=True):
            if ok:
                self._held.pop(row["seq"], None)
            else:
                self._held[row["seq"]] = retry_at
        return [row["seq"] for row, ok in zip(rows, acked, strict=True) if ok]

    async def relay_once(self) -> int:
        """Publish and delete one batch of the outbox; returns how many events left it (0: empty, or another
        worker's relay holds it)."""
        now = time.monotonic()
        self._held = {seq: until for seq, until in self._held.items() if until > now}
        return await self.store.relay_events(self.batch, self._publish, list(self._held))

    async def run(self, stop: asyncio.Event, poll_sec: float = POLL_SEC) -> None:
        failures = 0
        while not stop.is_set():
            try:
                # Housekeeping that ends in events: completed schedules to delete go first, so their
                # schedule.deleted leaves in this round.
                await self.store.delete_completed(self.batch)
                relayed = await self.relay_once()
                failures = 0
                if relayed >= self.batch:
                    continue
                sleep = poll_sec
            except Unavailable as exc:
                failures += 1
                sleep = min(5.0, 0.2 * 2**failures)
                logger.warning("lifecycle events not relayed ({}); retrying in {:.1f}s", exc, sleep)
            except Exception:
                failures += 1
                sleep = min(5.0, 0.2 * 2**failures)
                logger.exception("lifecycle event relay error; retrying in {:.1f}s", sleep)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), sleep)
