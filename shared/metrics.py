"""Prometheus metrics of the API and the workers (one registry per process; each process serves its own).

Names follow Prometheus conventions: `scheduler_` prefix, base units (seconds), `_total` for counters.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

# Scheduling lag and delivery latency span milliseconds (normal) to minutes (an outage).
_SECONDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)

api_requests = Histogram(
    "scheduler_api_request_duration_seconds",
    "API request duration",
    ["method", "route", "status"],
    buckets=_SECONDS,
)

runs = Counter("scheduler_runs_total", "Runs that reached a final state", ["target", "outcome"])
delivery_latency = Histogram(
    "scheduler_delivery_duration_seconds", "Time one delivery attempt took", ["target"], buckets=_SECONDS
)
scheduling_lag = Histogram(
    "scheduler_scheduling_lag_seconds",
    "Delivery start minus the scheduled time (first attempts)",
    ["target"],
    buckets=_SECONDS,
)
backlog_age = Gauge("scheduler_backlog_age_seconds", "Age of the oldest due schedule not yet claimed")
claim_batch = Histogram(
    "scheduler_claim_batch_size", "Schedules claimed per transaction", buckets=(0, 1, 5, 10, 25, 50, 100, 250, 500)
)
retries = Counter("scheduler_retries_total", "Delivery attempts that will be retried", ["target"])
dead_letters = Counter("scheduler_dead_letters_total", "Runs that failed for good", ["target"])
missed = Counter("scheduler_missed_occurrences_total", "Occurrences missed while no worker ran", ["policy", "fate"])
overlap_skipped = Counter(
    "scheduler_overlap_skipped_total", "Occurrences not fired because their previous run was in flight", ["policy"]
)
http_status = Counter("scheduler_http_target_responses_total", "HTTP target answers by status", ["status"])

# Worker fleet: fencing.
leases_lost = Counter(
    "scheduler_leases_lost_total",
    "Runs a worker dropped because another worker took them over while it was away, or they were cancelled",
)
