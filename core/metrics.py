"""Prometheus metrics of a service, fed by its events (text format via prometheus_client)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from .events import Event, NotificationSent, StatusChanged, SyncFailed, SyncFinished

OUTCOMES = ("inserted", "updated", "deleted", "unchanged", "rejected")


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.runs = Counter("empsync_runs", "Sync runs by kind and result", ["kind", "status"], registry=r)
        self.documents = Counter("empsync_documents", "Documents processed by outcome", ["outcome"], registry=r)
        self.reads = Counter("empsync_firestore_reads", "Billable Firestore reads caused by sync runs", registry=r)
        self.duration = Histogram(
            "empsync_run_duration_seconds",
            "Wall time of sync runs",
            ["kind"],
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600),
            registry=r,
        )
        self.last_success = Gauge(
            "empsync_last_success_timestamp_seconds", "Unix time of the last successful run", registry=r
        )
        self.leader = Gauge("empsync_leader", "1 while this service holds the sync lock", registry=r)
        self.rows = Gauge("empsync_rows", "Live rows in the mirror table", registry=r)
        self.interval = Gauge("empsync_interval_seconds", "Current interval between normal runs", registry=r)
        self.up = Gauge("empsync_worker_up", "1 while the worker thread runs", registry=r)
        self.notifications = Counter(
            "empsync_notifications",
            "Notifications by receiver and outcome (sent, failed after retries, dropped unsent)",
            ["receiver", "outcome"],
            registry=r,
        )
        for outcome in OUTCOMES:
            self.documents.labels(outcome)

    def observe(self, event: Event) -> None:
        if isinstance(event, SyncFinished):
            result = event.result
            self.runs.labels(result.kind, "ok").inc()
            counts = result.counts.as_dict()
            for outcome in OUTCOMES:
                if counts.get(outcome):
                    self.documents.labels(outcome).inc(counts[outcome])
            self.reads.inc(counts.get("firestore_reads", 0))
            self.duration.labels(result.kind).observe(result.duration_ms / 1000)
            self.last_success.set(event.at.replace(tzinfo=UTC).timestamp())  # events carry naive UTC
        elif isinstance(event, SyncFailed):
            self.runs.labels(event.kind, "failed").inc()
        elif isinstance(event, StatusChanged):
            self.update(event.snapshot)
        elif isinstance(event, NotificationSent):
            outcome = "sent" if event.ok else "dropped" if event.attempts == 0 else "failed"
            self.notifications.labels(event.receiver, outcome).inc()

    def update(self, snapshot: Mapping[str, Any]) -> None:
        self.leader.set(1 if snapshot.get("is_leader") else 0)
        if snapshot.get("rows") is not None:
            self.rows.set(snapshot["rows"])
        if snapshot.get("interval") is not None:
            self.interval.set(snapshot["interval"])

    def render(self) -> bytes:
        return generate_latest(self.registry)
