"""(a) Apply throughput on MariaDB: the store's batches against row-by-row writes.

Every side writes the same rows into a fresh copy of the same table: first
every row is new (inserts), then every row changes two fields (updates).

- store: what applying a batch costs the database layer, ``MirrorStore`` in
  one transaction per batch — load the stored rows, multi-row upserts, audit
  rows, run progress, commit — with the rows already mapped and diffed.
- row by row: what a naive mirror does per document: SELECT the row, then
  INSERT it or UPDATE its changed columns, and commit; rows already mapped.
- engine: the whole batch path, ``SyncEngine._apply``, which also maps,
  hashes and diffs each document (pure Python work both other sides skip).

The goal is on store against row by row; the engine's figure is beside it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, select, update

from core.config import DELETED_AT_COLUMN, HASH_COLUMN, SYNCED_AT_COLUMN, UPDATE_TIME_COLUMN, Config
from core.db import Database
from core.diff import Stored, decide, same
from core.engine import SyncEngine, _Run
from core.mapping import content_hash, map_document
from core.source import SourceDoc
from core.state import State
from core.store import MirrorStore, Planned, naive_utc

from .harness import Servers, doc_id, employee, say
from .options import Sizes
from .report import Goal, median, rounded

GOAL_RATIO = 30.0


@dataclass(frozen=True)
class Phase:
    name: str
    docs: list[SourceDoc]
    plans: list[Planned]  # the diff of each document against what the previous phase stored


def documents(count: int, version: int) -> list[SourceDoc]:
    """What the source would hand the engine: decoded data, update times that grow with each version."""
    base = datetime(2024, 1, 1, tzinfo=UTC) + timedelta(days=version)
    docs = []
    for i in range(count):
        moment = base + timedelta(microseconds=i)
        data = employee(i, version)
        data["updated_at"] = moment
        docs.append(SourceDoc(id=doc_id(i), data=data, update_time=moment, read_time=base))
    return docs


def phases(config: Config, count: int) -> list[Phase]:
    out: list[Phase] = []
    stored: dict[str, Stored] = {}
    for version, name in enumerate(("insert", "update")):
        docs = documents(count, version)
        plans = []
        for doc in docs:
            row = map_document(config.fields, doc.data)
            digest = content_hash(row)
            update_time = naive_utc(doc.update_time)
            plans.append(
                Planned(doc.id, decide(stored.get(doc.id), row, digest, update_time), row, digest, doc.update_time)
            )
            stored[doc.id] = Stored(row, digest, update_time, False)
        out.append(Phase(name, docs, plans))
    return out


def now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def timed(step: Callable[[], None]) -> float:
    started = time.perf_counter()
    step()
    return time.perf_counter() - started


def store_side(config: Config, work: list[Phase]) -> list[float]:
    """Seconds per phase through MirrorStore, one transaction per batch."""
    db = Database(config)
    db.ensure_schema()
    store, state = MirrorStore(db), State(db)
    size = config.target.batch_size
    seconds = []
    for phase in work:
        run_id = state.start_run("force", "bench")

        def apply(plans: list[Planned] = phase.plans, run_id: int = run_id) -> None:
            for start in range(0, len(plans), size):
                batch = plans[start : start + size]
                with db.begin() as conn:
                    store.load(conn, [p.doc_id for p in batch])
                    store.write(conn, batch, run_id, now())
                    state.record_progress(conn, run_id, {"fetched": start + len(batch)})

        seconds.append(timed(apply))
    db.dispose()
    return seconds


def engine_side(config: Config, work: list[Phase]) -> list[float]:
    """Seconds per phase through the engine's batch path (map, hash, diff, apply)."""
    engine = SyncEngine(config)
    engine.db.ensure_schema()
    size = config.target.batch_size
    seconds = []
    for phase in work:
        run = _Run(engine.state.start_run("force", "bench"), "force", False, False, now())

        def apply(docs: list[SourceDoc] = phase.docs, run: _Run = run) -> None:
            for start in range(0, len(docs), size):
                engine._apply(docs[start : start + size], run)

        seconds.append(timed(apply))
    engine.close()
    return seconds


def row_by_row(config: Config, work: list[Phase]) -> list[float]:
    """Seconds per phase: one SELECT, then one INSERT or UPDATE, and one commit per row."""
    db = Database(config)
    db.ensure_schema()
    mirror = db.tables.mirror
    id_column = config.target.id_column
    key = mirror.c[id_column]
    mapped = db.tables.mapped_columns
    seconds = []
    with db.engine.connect() as conn:
        for phase in work:

            def apply(plans: list[Planned] = phase.plans) -> None:
                for plan in plans:
                    bookkeeping = {
                        UPDATE_TIME_COLUMN: naive_utc(plan.update_time),
                        SYNCED_AT_COLUMN: now(),
                        HASH_COLUMN: plan.content_hash,
                    }
                    with conn.begin():
                        stored = conn.execute(select(mirror).where(key == plan.doc_id)).mappings().first()
                        if stored is None:
                            values: dict[str, Any] = {id_column: plan.doc_id, **plan.row, **bookkeeping}
                            conn.execute(mirror.insert().values(values))
                        else:
                            changed = {c: plan.row[c] for c in mapped if not same(stored[c], plan.row[c])}
                            conn.execute(update(mirror).where(key == plan.doc_id).values({**changed, **bookkeeping}))

            seconds.append(timed(apply))
    db.dispose()
    return seconds


def fingerprint(config: Config) -> tuple[int, int, str]:
    """Rows, their salary sum and statuses: equal on every side when all did the same work."""
    db = Database(config)
    m = db.tables.mirror
    with db.engine.connect() as conn:
        rows, salaries = conn.execute(select(func.count(), func.sum(m.c.salary))).one()
        statuses = ",".join(conn.execute(select(m.c.status).distinct().order_by(m.c.status)).scalars())
        deleted = conn.execute(select(func.count(m.c[DELETED_AT_COLUMN]))).scalar()
    db.dispose()
    return int(rows), int(salaries or 0), f"{statuses};deleted={deleted}"


def run(servers: Servers, sizes: Sizes) -> tuple[dict[str, Any], list[Goal]]:
    n = sizes.apply_rows
    work = phases(servers.config("bench-apply", "sqlite://"), n)

    def fresh(side: str) -> Config:
        return servers.config("bench-apply", servers.database(f"apply_{side}"), batch_size=sizes.batch_size)

    say(f"apply: {n} inserts then {n} updates: store (x{sizes.pairs}, around the others), row by row, engine")
    # The store's runs are short, so a burst of noise hits them hardest: repeat
    # them around the long row-by-row run and keep the median of each phase.
    sides: dict[str, Callable[[Config, list[Phase]], list[float]]] = {
        "row_by_row": row_by_row,
        "engine": engine_side,
    }
    runs: dict[str, list[list[float]]] = {"store": [], "row_by_row": [], "engine": []}
    prints = set()
    order: list[str] = []
    others = list(sides)
    for _ in range(max(1, sizes.pairs)):
        order.append("store")
        if others:
            order.append(others.pop(0))
    for side in order + others:
        config = fresh(side)
        runs[side].append((sides.get(side) or store_side)(config, work))
        prints.add(fingerprint(config))
    seconds = {side: [median([r[i] for r in per]) for i in range(len(work))] for side, per in runs.items()}

    result: dict[str, Any] = {
        "benchmark": "apply",
        "target": "mariadb",
        "rows": n,
        "batch_size": sizes.batch_size,
        "store_runs": len(runs["store"]),
    }
    goals = []
    for i, phase in enumerate(work):
        figures: dict[str, Any] = {}
        for side, per_phase in seconds.items():
            figures[f"{side}_s"] = rounded(per_phase[i])
            figures[f"{side}_rows_per_s"] = round(n / per_phase[i])
        figures["store_s_each"] = [rounded(r[i]) for r in runs["store"]]
        ratio = seconds["row_by_row"][i] / seconds["store"][i]
        figures["ratio_store"] = rounded(ratio, 1)
        figures["ratio_engine"] = rounded(seconds["row_by_row"][i] / seconds["engine"][i], 1)
        result[phase.name] = figures
        goals.append(
            Goal("apply", f"{phase.name} throughput, store / row by row", rounded(ratio, 1), ">=", GOAL_RATIO, "x")
        )
    result["same_table_contents"] = len(prints) == 1
    return result, goals
