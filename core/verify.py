"""``empsync verify``: compare Firestore with the table, writing nothing to the mirror.

It reads every document once (field mask, cursor pages) and each row once,
so it says what it will cost before it starts: a ``count()`` first (one read
per 1,000 documents), then a refusal above ``[sync] verify_max_reads``
unless ``--yes``. Differences: missing (a valid document with no live row),
extra (a live row whose document is gone, unless delete_mode = "keep"), and
different (the row's values differ, naming the fields).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from typing import Any

from .config import Config
from .diff import same
from .engine import SyncEngine
from .errors import ConfigError, EmpsyncError
from .mapping import RejectError, map_document
from .render import emit_json, emit_text
from .safe import safe_values
from .state import StateKey
from .times import iso, utcnow

SHOWN = 100  # ids listed per kind of difference; the counts are always complete


@dataclass
class VerifyReport:
    documents: int = 0
    rows: int = 0
    missing: list[str] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)
    different: list[dict[str, Any]] = field(default_factory=list)
    rejected: int = 0
    firestore_reads: int = 0
    duration_ms: int = 0

    @property
    def differences(self) -> int:
        return len(self.missing) + len(self.extra) + len(self.different)

    def to_json(self) -> dict[str, Any]:
        return {
            "status": "match" if self.differences == 0 else "drift",
            "differences": self.differences,
            "documents": self.documents,
            "rows": self.rows,
            "missing": {"count": len(self.missing), "ids": self.missing[:SHOWN]},
            "extra": {"count": len(self.extra), "ids": self.extra[:SHOWN]},
            "different": {"count": len(self.different), "items": self.different[:SHOWN]},
            "rejected": self.rejected,
            "firestore_reads": self.firestore_reads,
            "duration_ms": self.duration_ms,
        }


def estimated_reads(engine: SyncEngine) -> int:
    """What a verify costs: the documents it reads, plus the count() that priced it."""
    n = engine.source.count()
    return max(1, n) + max(1, math.ceil(n / 1000))


def verify(engine: SyncEngine) -> VerifyReport:
    started = time.monotonic()
    reads_before = engine.source.meter.reads
    report = VerifyReport()
    engine.db.ensure_schema()
    fields = engine.config.fields
    seen: set[str] = set()
    with engine.db.connect() as conn:
        for page in engine.source.all_pages():
            valid = []
            for doc in page:
                seen.add(doc.id)
                try:
                    valid.append((doc.id, map_document(fields, doc.data)))
                except RejectError:
                    report.rejected += 1
            stored = engine.mirror.load(conn, [doc_id for doc_id, _ in valid])
            for doc_id, row in valid:
                have = stored.get(doc_id)
                if have is None or have.deleted:
                    report.missing.append(doc_id)
                    continue
                fields_off = [c for c, v in row.items() if not same(have.values.get(c), v)]
                if fields_off:
                    report.different.append({"id": doc_id, "fields": fields_off})
            report.documents += len(page)
        live = list(engine.mirror.live_ids(conn))
    report.rows = len(live)
    if engine.config.target.delete_mode != "keep":
        report.extra = [doc_id for doc_id in live if doc_id not in seen]
    report.firestore_reads = engine.source.meter.reads - reads_before
    report.duration_ms = int((time.monotonic() - started) * 1000)
    return report


def run_verify(config: Config, *, as_json: bool, yes: bool) -> int:
    engine = SyncEngine(config)
    try:
        cost = estimated_reads(engine)
        limit = config.sync.verify_max_reads
        if cost > limit and not yes:
            raise ConfigError(
                "--yes",
                f"verify would cost about {cost:,} Firestore reads, above [sync] verify_max_reads = {limit:,}",
                "run again with --yes, or raise verify_max_reads",
            )
        report = verify(engine)
        summary = {**report.to_json(), "at": iso(utcnow())}
        try:
            short = {k: summary[k] for k in ("status", "differences", "documents", "rows", "at")}
            engine.state.set({StateKey.LAST_VERIFY: json.dumps(short)})
        except EmpsyncError:
            pass  # the result still prints
    finally:
        engine.close()
    if as_json:
        emit_json(summary)
    else:
        emit_text(verify_text(summary, cost))
    return 0 if report.differences == 0 else 1


def verify_text(s: dict[str, Any], cost: int) -> str:
    s = safe_values(s)
    head = (
        f"verify: {s['status']} — {s['documents']} documents, {s['rows']} rows, "
        f"{s['differences']} differences, {s['rejected']} rejected; {s['firestore_reads']} Firestore reads "
        f"(estimated {cost})"
    )
    lines = [head]
    for kind in ("missing", "extra"):
        if s[kind]["count"]:
            lines.append(f"  {kind} ({s[kind]['count']}): {', '.join(s[kind]['ids'][:20])}")
    for item in s["different"]["items"][:20]:
        lines.append(f"  different: {item['id']}: {', '.join(item['fields'])}")
    return "\n".join(lines)
