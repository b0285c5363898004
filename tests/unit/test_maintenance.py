"""Which run history partitions to create and drop, with the time passed in."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from shared.db.partitions import Partition
from shared.settings import Settings
from worker.maintenance import PartitionConfig, partition_name, plan_partitions, slot_start

HOUR = timedelta(hours=1)
DAY = timedelta(days=1)


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def cover(starts: datetime, count: int, span: timedelta) -> list[Partition]:
    return [
        Partition(partition_name(starts + i * span), starts + i * span, starts + (i + 1) * span) for i in range(count)
    ]


def test_an_empty_table_gets_the_previous_current_and_ahead_slots():
    config = PartitionConfig(span=HOUR, ahead=2, retention=14 * DAY)
    plan = plan_partitions(at("2026-12-03T08:41:07"), [], config)
    assert [(p.name, p.starts, p.ends) for p in plan.create] == [
        ("runs_p20261203_070000", at("2026-12-03T07:00"), at("2026-12-03T08:00")),
        ("runs_p20261203_080000", at("2026-12-03T08:00"), at("2026-12-03T09:00")),
        ("runs_p20261203_090000", at("2026-12-03T09:00"), at("2026-12-03T10:00")),
        ("runs_p20261203_100000", at("2026-12-03T10:00"), at("2026-12-03T11:00")),
    ]
    assert plan.drop == []
    assert plan.expire_before == at("2026-11-19T08:41:07")


def test_existing_partitions_are_not_created_again_and_the_next_one_appears_in_time():
    config = PartitionConfig(span=HOUR, ahead=2, retention=14 * DAY)
    existing = cover(at("2026-12-03T07:00"), 4, HOUR)  # 07:00 - 11:00
    assert plan_partitions(at("2026-12-03T08:59:59"), existing, config).create == []
    plan = plan_partitions(at("2026-12-03T09:00:00"), existing, config)
    assert [p.name for p in plan.create] == ["runs_p20261203_110000"]


def test_a_slot_partly_covered_by_the_history_before_partitioning_gets_the_rest():
    config = PartitionConfig(span=DAY, ahead=1, retention=14 * DAY)
    legacy = Partition("runs_legacy", None, at("2026-12-03T09:00"))
    plan = plan_partitions(at("2026-12-03T08:41"), [legacy], config)
    assert [(p.name, p.starts, p.ends) for p in plan.create] == [
        ("runs_p20261203_090000", at("2026-12-03T09:00"), at("2026-12-04T00:00")),
        ("runs_p20261204_000000", at("2026-12-04T00:00"), at("2026-12-05T00:00")),
    ]
    # The legacy partition goes once everything in it is older than the retention.
    assert plan_partitions(at("2026-12-17T08:59"), [legacy], config).drop == []
    assert plan_partitions(at("2026-12-17T09:00"), [legacy], config).drop == ["runs_legacy"]


def test_partitions_that_ended_before_the_retention_are_dropped_and_not_recreated():
    config = PartitionConfig(span=DAY, ahead=2, retention=14 * DAY)
    existing = cover(at("2026-11-15"), 21, DAY)  # 15 Nov - 6 Dec
    plan = plan_partitions(at("2026-12-03T10:00"), existing, config)
    # Cutoff 19 Nov 10:00: the day partitions that ended by then go; 19 Nov (ends 20 Nov) stays.
    assert plan.drop == [
        "runs_p20261115_000000",
        "runs_p20261116_000000",
        "runs_p20261117_000000",
        "runs_p20261118_000000",
    ]
    assert [p.name for p in plan.create] == []


def test_minute_partitions_for_tests_and_soaks():
    config = PartitionConfig(span=timedelta(minutes=1), ahead=2, retention=timedelta(minutes=5))
    now = at("2026-12-03T08:41:30")
    existing = cover(at("2026-12-03T08:30"), 14, timedelta(minutes=1))  # 08:30 - 08:44
    plan = plan_partitions(now, existing, config)
    assert plan.drop == [partition_name(at(f"2026-12-03T08:{m}")) for m in range(30, 36)]  # ended by 08:36:30
    assert plan.create == []
    assert plan.expire_before == at("2026-12-03T08:36:30")


def test_retention_shorter_than_a_slot_never_recreates_what_it_drops():
    config = PartitionConfig(span=HOUR, ahead=1, retention=timedelta(minutes=30))
    plan = plan_partitions(at("2026-12-03T08:40"), [], config)
    assert [p.name for p in plan.create] == ["runs_p20261203_080000", "runs_p20261203_090000"]


def test_slots_are_aligned_to_the_epoch_in_utc():
    assert slot_start(at("2026-12-03T08:41:07.5"), DAY) == at("2026-12-03")
    assert slot_start(at("2026-12-03T08:41:07.5"), timedelta(minutes=15)) == at("2026-12-03T08:30")
    berlin = datetime.fromisoformat("2026-12-03T00:30:00+01:00")
    assert slot_start(berlin, DAY) == at("2026-12-02")


@pytest.mark.parametrize(
    ("span", "ahead", "retention"),
    [(timedelta(0), 1, DAY), (timedelta(seconds=1.5), 1, DAY), (HOUR, 0, DAY), (HOUR, 1, timedelta(0))],
)
def test_invalid_settings_are_refused(span: timedelta, ahead: int, retention: timedelta):
    with pytest.raises(ValueError, match="RUNS_"):
        PartitionConfig(span=span, ahead=ahead, retention=retention)


def test_defaults_are_daily_partitions_for_fourteen_days():
    config = PartitionConfig.from_settings(Settings())
    assert (config.span, config.ahead, config.retention) == (DAY, 2, 14 * DAY)
