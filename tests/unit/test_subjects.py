"""Tenant NATS namespaces: subject layout, stream names, prefix checks and topic validation (pure)."""

from __future__ import annotations

import re

import pytest

from shared.messaging.subjects import Namespace, tenant_token
from shared.validation import topic_problem

NS = Namespace()
STREAM_NAME = re.compile(r"^[A-Za-z0-9_-]{1,128}$")


def test_default_layout():
    assert NS.event_subject("t1", "reports.daily") == "tenants.t1.reports.daily"
    assert NS.event_filter("t1") == "tenants.t1.>"
    assert NS.deadletter_subject("t1") == "tenants.t1.deadletter"
    assert NS.queue_subject("t1", "jobs") == "queues.t1.jobs"


def test_a_dotted_tenant_id_is_one_token_and_cannot_meet_another_tenant():
    # Tenant "a.b" and tenant "a" with topic "b.x" must not share a subject.
    assert NS.event_subject("a.b", "x") != NS.event_subject("a", "b.x")
    assert NS.event_subject("a.b", "x").split(".")[1] == tenant_token("a.b")
    assert NS.queue_subject("a.b", "x") != NS.queue_subject("a", "b.x")
    assert NS.event_stream("a.b") != NS.event_stream("a_b")  # sanitised alike, told apart by the digest


@pytest.mark.parametrize("tenant", ["t1", "a.b", "a_b", "Tenant:42", "x" * 64, "a-b.c:d"])
@pytest.mark.parametrize("topic", ["jobs", "jobs.reports", "a_b", "a.b", "x" * 200, "a:b=c@d+e~f"])
def test_stream_names_are_legal(tenant, topic):
    assert STREAM_NAME.match(NS.event_stream(tenant))
    assert STREAM_NAME.match(NS.queue_stream(tenant, topic))


def test_stream_names_are_unique_per_tenant_and_topic():
    pairs = [("t1", "a.b"), ("t1", "a_b"), ("t1.a", "b"), ("t1", "a.b.c"), ("t2", "a.b"), ("t1_a", "b")]
    names = {NS.queue_stream(t, q) for t, q in pairs}
    assert len(names) == len(pairs)
    assert len({NS.event_stream(t) for t, _ in pairs}) == len({t for t, _ in pairs})


def test_event_and_queue_namespaces_never_overlap():
    # JetStream refuses overlapping stream subjects; the tenant's event stream captures tenants.t1.>
    assert not NS.queue_subject("t1", "x").startswith("tenants.")


@pytest.mark.parametrize(
    ("events", "queues", "deadletter", "why"),
    [
        ("tenants.", "queues.{tenant}.", "", "{tenant}"),
        ("tenants.{tenant}", "queues.{tenant}.", "", "end with"),
        ("tenants.{tenant}.{tenant}.", "queues.{tenant}.", "", "once"),
        ("tenants.*.{tenant}.", "queues.{tenant}.", "", "illegal"),
        ("$JS.{tenant}.", "queues.{tenant}.", "", "illegal"),
        ("tenants..{tenant}.", "queues.{tenant}.", "", "illegal"),
        ("tenants.{tenant}.", "tenants.{tenant}.q.", "", "overlap"),
        ("{tenant}.", "queues.{tenant}.", "", "overlap"),
        ("tenants.{tenant}.", "queues.{tenant}.", "tenants.ops.deadletter", "inside"),
        ("tenants.{tenant}.", "queues.{tenant}.", "queues.x.y", "inside"),
        ("tenants.{tenant}.", "queues.{tenant}.", "ops.>", "plain"),
    ],
)
def test_bad_layouts_are_refused_at_start_up(events, queues, deadletter, why):
    with pytest.raises(ValueError, match=re.escape(why)):
        Namespace(events, queues, deadletter)


def test_a_custom_layout():
    ns = Namespace("org.{tenant}.events.", "org.{tenant}.queues.", "ops.deadletter")
    assert ns.event_subject("t1", "x") == "org.t1.events.x"
    assert ns.queue_subject("t1", "x") == "org.t1.queues.x"


@pytest.mark.parametrize(
    "topic",
    [
        "",
        "*",
        "a.*",
        ">",
        "a.>",
        "a*b",
        "$JS.API.STREAM.CREATE.x",
        "$SYS.REQ.SERVER.PING",
        "$KV.bucket.key",
        "_INBOX.abc",
        "_inbox.abc",
        "a..b",
        ".a",
        "a.",
        "a b",
        "a\tb",
        "a\nb",
        "a\x00b",
        "a\x7fb",
        "deadletter",
        "deadletter.x",
        "scheduler.deadletter",
        "scheduler.run.failed",
        "tenants.t2.reports",
        "queues.t2.jobs",
        "Tenants.t2.x",
        "a/b",
        "grüße",
        "x" * 201,
    ],
)
def test_topics_that_could_escape_or_confuse_are_refused(topic):
    assert topic_problem(topic) is not None


@pytest.mark.parametrize("topic", ["reports.daily.generate", "my-queue-topic", "a", "jobs_v2.eu-west:1", "x" * 200])
def test_plain_topics_are_accepted(topic):
    assert topic_problem(topic) is None
