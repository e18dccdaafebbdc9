"""Events carry frozen data only: what a subscriber sees cannot change under it, nor be changed by it."""

from __future__ import annotations

from datetime import datetime

import pytest

from core.events import BatchApplied, StatusChanged


def test_a_status_event_keeps_the_snapshot_as_it_was_and_read_only():
    snapshot = {"state": "syncing", "pending": [{"request_id": 1}], "current_run": {"counts": {"fetched": 2}}}
    event = StatusChanged(datetime(2026, 1, 1), "syncing", "", snapshot)
    snapshot["state"] = "idle"
    snapshot["pending"].append({"request_id": 2})
    snapshot["current_run"]["counts"]["fetched"] = 99
    assert event.snapshot["state"] == "syncing"
    assert [p["request_id"] for p in event.snapshot["pending"]] == [1]
    assert event.snapshot["current_run"]["counts"]["fetched"] == 2
    with pytest.raises(TypeError):
        event.snapshot["state"] = "idle"  # type: ignore[index]
    with pytest.raises(TypeError):
        event.snapshot["current_run"]["counts"]["fetched"] = 3
    assert dict(event.snapshot)["state"] == "syncing"  # a face copies it as a plain dict when it must


def test_a_batch_event_keeps_its_counts_read_only():
    counts = {"fetched": 10, "inserted": 3}
    event = BatchApplied(datetime(2026, 1, 1), 7, counts)
    counts["inserted"] = 4
    assert dict(event.counts) == {"fetched": 10, "inserted": 3}
    with pytest.raises(TypeError):
        event.counts["inserted"] = 5  # type: ignore[index]
