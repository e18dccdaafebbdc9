"""The two checks every fault case ends with: verify finds no differences, and the audit log holds no duplicates.

Also used by ``bench/soak.py``, so the soak counts "lost" and "duplicated" exactly
the way the suite asserts them.

What a duplicate is
-------------------

``empsync_changes`` is a history: per document an ``insert``, ``update`` rows
(one per changed field, with old and new value), ``delete`` and ``restore``.
A crash or a re-delivered snapshot can make the engine apply a change it had
already committed; if that ever wrote audit rows again, the log would hold a
*replay*: a row with the same document, operation, field, old and new value as
one already recorded, in the same run (a listen session re-applying a
re-delivered snapshot) or a later one (a rerun after kill -9).

Counting identical rows is not the test, because identical rows can be
legitimate: salary 1 → 2, 2 → 1, 1 → 2 is three true changes. What a replay
always breaks is the *order* of the history, so the check walks each
document's rows in commit order (``id``) and requires:

- lifecycle: ``insert`` only while the document has no row (first, or after a
  hard delete); ``update`` and ``delete`` only while it is live; ``restore``
  only while it is deleted. A second ``insert``, a second ``delete`` without a
  ``restore`` between them, and so on, is a replay.
- value chain: per (document, field), each ``update``'s old value equals the
  new value of the previous ``update`` of that field. A replayed change
  repeats an ``old`` that is no longer current, so it breaks the chain (and a
  lost audit row would break it too). An insert starts a fresh chain: it
  records no values.
- ``repair`` (a force run putting right a row changed behind empsync's back)
  follows a change nobody audited, so it may come in any state and its old
  value is what the row held, not the chain's: it leaves the document live and
  starts the field's chain again from its new value.

``replays`` lists every row that breaks either rule. ``repeats`` is the naive
count besides it — groups of rows identical in (document, operation, field,
old, new) — which the cases whose workload never repeats a value (a fresh
salary from one counter on every write) assert to be empty as well.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import create_engine, text

from core.config import Config
from core.engine import SyncEngine
from core.verify import VerifyReport, verify

LIVE, DELETED, ABSENT = "live", "deleted", "absent"
# operation -> (states it may follow, state it leads to); a hard delete leads back to ABSENT.
LIFECYCLE = {
    "insert": ({ABSENT}, LIVE),
    "update": ({LIVE}, LIVE),
    "delete": ({LIVE}, DELETED),
    "restore": ({DELETED}, LIVE),
    "repair": ({LIVE, DELETED, ABSENT}, LIVE),
}


@dataclass
class AuditReport:
    rows: int = 0
    documents: int = 0
    operations: dict[str, int] = field(default_factory=dict)
    replays: list[str] = field(default_factory=list)
    repeats: list[tuple[Any, ...]] = field(default_factory=list)

    @property
    def duplicates(self) -> int:
        return len(self.replays)

    def to_json(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "documents": self.documents,
            "operations": self.operations,
            "replays": len(self.replays),
            "identical_rows": len(self.repeats),
            "first_replays": self.replays[:10],
        }


def audit_report(url: str, hard_deletes: bool = False) -> AuditReport:
    """Read ``empsync_changes`` in commit order and check it as the module docstring says."""
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                text(
                    "SELECT id, run_id, document_id, operation, field, old_value, new_value "
                    "FROM empsync_changes ORDER BY id"
                )
            ).all()
    finally:
        engine.dispose()
    return check_history(rows, hard_deletes)


def check_history(rows, hard_deletes: bool = False) -> AuditReport:
    report = AuditReport(rows=len(rows))
    state: dict[str, str] = {}
    chain: dict[str, dict[str, str | None]] = {}  # document -> field -> its value by the last update
    ops: Counter[str] = Counter()
    same: Counter[tuple[Any, ...]] = Counter()
    for row_id, run_id, doc, op, column, old, new in rows:
        ops[op] += 1
        same[(doc, op, column, old, new)] += 1
        where = f"row {row_id} (run {run_id}): {doc} {op}" + (f" {column} {old!r} -> {new!r}" if column else "")
        if op not in LIFECYCLE:
            report.replays.append(f"{where}: unknown operation")
            continue
        allowed, after = LIFECYCLE[op]
        current = state.get(doc, ABSENT)
        if current not in allowed:
            report.replays.append(f"{where}: {op} while the document is {current}")
        state[doc] = ABSENT if op == "delete" and hard_deletes else after
        if op == "insert":
            chain.pop(doc, None)  # an insert records no values: a fresh chain
        elif op == "update" and column is not None:
            fields = chain.setdefault(doc, {})
            if column in fields and fields[column] != old:
                report.replays.append(f"{where}: the field was {fields[column]!r} by then")
            fields[column] = new
        elif op == "repair" and column is not None:
            chain.setdefault(doc, {})[column] = new
    report.documents = len(state)
    report.operations = dict(ops)
    report.repeats = [key for key, n in same.items() if n > 1]
    return report


# -- verify ------------------------------------------------------------------------------


def verify_now(config: Config) -> VerifyReport:
    engine = SyncEngine(config)
    try:
        return verify(engine)
    finally:
        engine.close()


def wait_converged(config: Config, timeout: float, every: float = 1.0, alive=None) -> VerifyReport:
    """Verify in-process until the table equals Firestore; fail with the last report after ``timeout``.

    ``alive`` (optional) is called between tries and may raise to end the wait early.
    """
    deadline = time.monotonic() + timeout
    engine = SyncEngine(config)
    try:
        while True:
            report = verify(engine)
            if report.differences == 0:
                return report
            if time.monotonic() >= deadline:
                raise AssertionError(
                    f"the table did not converge within {timeout:.0f} s: {report.differences} differences, "
                    f"missing {report.missing[:5]}, extra {report.extra[:5]}, different {report.different[:5]}"
                )
            if alive is not None:
                alive()
            time.sleep(every)
    finally:
        engine.close()


def slope(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of (x, y) points; 0 for fewer than two distinct x."""
    n = len(points)
    if n < 2:
        return 0.0
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    sxx = sum((x - mx) ** 2 for x, _ in points)
    if math.isclose(sxx, 0.0):
        return 0.0
    return sum((x - mx) * (y - my) for x, y in points) / sxx
