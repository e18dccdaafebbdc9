"""What a run did: its counts and its result, as the engine fills them in and the faces read them.

A ``RunResult`` changes while its run goes on; events carry ``report()``, a frozen copy.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from .events import RunCounts, RunReport
from .times import iso, parse_iso


@dataclass
class Counts:
    fetched: int = 0
    inserted: int = 0
    updated: int = 0  # restored rows count here too
    restored: int = 0
    deleted: int = 0
    unchanged: int = 0
    stale: int = 0
    repaired: int = 0  # rows found changed behind empsync's back and put right (force runs)
    rejected: int = 0
    firestore_reads: int = 0
    naive_reads: int = 0

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)

    @property
    def written(self) -> int:
        return self.inserted + self.updated + self.deleted


@dataclass
class RunResult:
    status: str  # ok | skipped | failed
    reason: str = ""
    hint: str = ""
    forced: bool = False
    dry_run: bool = False
    kind: str = "normal"
    trigger: str = "cli"
    counts: Counts = field(default_factory=Counts)
    duration_ms: int = 0
    run_id: int | None = None
    started_at: datetime | None = None
    would_change: list[dict[str, Any]] = field(default_factory=list)
    exit_code: int = 0
    # Whether a failure is worth retrying soon: a tripped mass-delete guard would trip again.
    retry: bool = True
    # Read only what changed since the watermark (False: a full read, which also finds deletions).
    incremental: bool = False
    # A rollback's runs, newest first.
    rolled_back: list[int] = field(default_factory=list)

    def report(self) -> RunReport:
        """This result frozen, for events: it no longer changes when the run's bookkeeping goes on."""
        return RunReport(
            status=self.status,
            kind=self.kind,
            trigger=self.trigger,
            counts=RunCounts(**self.counts.as_dict()),
            duration_ms=self.duration_ms,
            run_id=self.run_id,
            started_at=self.started_at,
            forced=self.forced,
            dry_run=self.dry_run,
            incremental=self.incremental,
            reason=self.reason,
            hint=self.hint,
            exit_code=self.exit_code,
            rolled_back=tuple(self.rolled_back),
        )

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "status": self.status,
            "reason": self.reason or None,
            "hint": self.hint or None,
            "forced": self.forced,
            "dry_run": self.dry_run,
            **self.counts.as_dict(),
            "duration_ms": self.duration_ms,
            "run_id": self.run_id,
            "kind": self.kind,
            "started_at": iso(self.started_at),
        }
        if self.dry_run:
            out["changes"] = self.would_change
        if self.kind == "rollback":
            out["rolled_back"] = self.rolled_back
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any], *, trigger: str = "", exit_code: int = 0) -> RunResult:
        """A result another process recorded with ``to_json`` (a run the leader made on request)."""
        counts = Counts(**{k: int(data.get(k) or 0) for k in Counts().as_dict()})
        return cls(
            status=str(data.get("status") or "failed"),
            reason=data.get("reason") or "",
            hint=data.get("hint") or "",
            forced=bool(data.get("forced")),
            dry_run=bool(data.get("dry_run")),
            kind=str(data.get("kind") or "normal"),
            trigger=trigger,
            counts=counts,
            duration_ms=int(data.get("duration_ms") or 0),
            run_id=data.get("run_id"),
            started_at=parse_iso(data.get("started_at")),
            would_change=list(data.get("changes") or []),
            exit_code=exit_code,
            rolled_back=[int(r) for r in data.get("rolled_back") or []],
        )
