"""The Grafana dashboard and the alert rules only use metrics the code defines."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml
from prometheus_client import REGISTRY

import shared.metrics  # noqa: F401  (registers the metrics)

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
SERIES = re.compile(r"\bscheduler_[a-z_]+")


SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}


def defined() -> set[str]:
    """Every series name the metrics can produce (labelled metrics have no samples until first used)."""
    return {
        metric.name + suffix
        for metric in REGISTRY.collect()
        if metric.name.startswith("scheduler_")
        for suffix in SUFFIXES.get(metric.type, ("",))
    }


def test_dashboard_queries_use_defined_metrics():
    dashboard = json.loads((DEPLOY / "grafana" / "scheduler-dashboard.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    used = {name for e in exprs for name in SERIES.findall(e)}
    assert len(used) >= 8
    assert used <= defined(), used - defined()


def test_alert_rules_use_defined_metrics():
    rules = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yaml").read_text())["groups"][0]["rules"]
    used = {name for r in rules for name in SERIES.findall(r["expr"])}
    assert {
        "scheduler_scheduling_lag_seconds_bucket",
        "scheduler_backlog_age_seconds",
        "scheduler_dead_letters_total",
    } <= used
    assert used <= defined(), used - defined()
