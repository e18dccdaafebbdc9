"""(a) Apply throughput on MariaDB and on PostgreSQL: the store's batches against row-by-row writes.

Every side writes the same rows into its own fresh copy of the same table:
first every row is new (inserts), then every row changes two fields (updates).

- store: what applying a batch costs the database layer, ``MirrorStore`` in
  one transaction per batch — load the stored rows, multi-row upserts, audit
  rows, run progress, commit — with the rows already mapped and diffed.
- row by row: what a naive mirror does per document: SELECT the row, then
  INSERT it or UPDATE its changed columns, and commit; rows already mapped.
- engine: the whole batch path, ``SyncEngine._apply``, which also maps,
  hashes and diffs each document (pure Python work both other sides skip).

The sides take turns batch by batch (the order rotating), so a burst of
noise on the shared machine falls on all of them rather than on whichever
happened to be running. The goal is on store against row by row; the
engine's figure is beside it. Each server is measured in turn, with the
same documents.
"""

from __future__ import annotations

import time
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
from core.store import MirrorStore, Planned
from core.times import naive_utc

from .harness import TARGETS, Servers, doc_id, employee, say
from .options import Sizes
from .report import Goal, rounded

GOAL_RATIO = 30.0
WARM_UP_ROWS = 50


@dataclass(frozen=True)
class Phase:
    name: str
    docs: list[SourceDoc]
    plans: list[Planned]  # the diff of each document against what the previous phase stored


def documents(count: int, version: int, first: int = 0) -> list[SourceDoc]:
    """What the source would hand the engine: decoded data, update times that grow with each version."""
    base = datetime(2024, 1, 1, tzinfo=UTC) + timedelta(days=version)
    docs = []
    for i in range(first, first + count):
        moment = base + timedelta(microseconds=i)
        data = employee(i, version)
        data["updated_at"] = moment
        docs.append(SourceDoc(id=doc_id(i), data=data, update_time=moment, read_time=base))
    return docs


def phases(config: Config, count: int, first: int = 0) -> list[Phase]:
    out: list[Phase] = []
    stored: dict[str, Stored] = {}
    for version, name in enumerate(("insert", "update")):
        docs = documents(count, version, first)
        plans = []
        for doc in docs:
            row = map_document(config.fields, doc.data)
            digest = content_hash(row)
            update_time = naive_utc(doc.update_time)
            plans.append(
                Planned(doc.id, decide(stored.get(doc.id), row, digest, update_time), row, digest, doc.update_time)
            )
            stored[doc.id] = Stored(row, digest, update_time)
        out.append(Phase(name, docs, plans))
    return out


def now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


class Side:
    """One way of applying batches, on its own fresh database."""

    name = ""

    def __init__(self, config: Config) -> None:
        self.config = config

    def start_phase(self) -> None:
        pass

    def apply(self, plans: list[Planned], docs: list[SourceDoc]) -> None:
        raise NotImplementedError

    def close(self) -> None:
        pass


class StoreSide(Side):
    """MirrorStore, one transaction per batch."""

    name = "store"

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        self.db = Database(config)
        self.db.ensure_schema()
        self.store, self.state = MirrorStore(self.db), State(self.db)
        self.run_id = 0
        self.done = 0

    def start_phase(self) -> None:
        self.run_id, self.done = self.state.start_run("force", "bench"), 0

    def apply(self, plans: list[Planned], docs: list[SourceDoc]) -> None:
        with self.db.begin() as conn:
            self.store.load(conn, [p.doc_id for p in plans])
            self.store.write(conn, plans, self.run_id, now())
            self.done += len(plans)
            self.state.record_progress(conn, self.run_id, {"fetched": self.done})

    def close(self) -> None:
        self.db.dispose()


class EngineSide(Side):
    """The engine's batch path: map, hash, diff, then the store."""

    name = "engine"

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        self.engine = SyncEngine(config)
        self.engine.db.ensure_schema()
        self.run: _Run | None = None

    def start_phase(self) -> None:
        self.run = _Run(self.engine.state.start_run("force", "bench"), "force", False, False, now())

    def apply(self, plans: list[Planned], docs: list[SourceDoc]) -> None:
        assert self.run is not None
        self.engine._apply(docs, self.run)

    def close(self) -> None:
        self.engine.close()


class RowByRow(Side):
    """One SELECT, then one INSERT or UPDATE, and one commit per row."""

    name = "row_by_row"

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        self.db = Database(config)
        self.db.ensure_schema()
        self.conn = self.db.engine.connect()
        self.mirror = self.db.tables.mirror
        self.key = self.mirror.c[config.target.id_column]

    def apply(self, plans: list[Planned], docs: list[SourceDoc]) -> None:
        conn, mirror, key = self.conn, self.mirror, self.key
        for plan in plans:
            bookkeeping = {
                UPDATE_TIME_COLUMN: naive_utc(plan.update_time),
                SYNCED_AT_COLUMN: now(),
                HASH_COLUMN: plan.content_hash,
            }
            with conn.begin():
                stored = conn.execute(select(mirror).where(key == plan.doc_id)).mappings().first()
                if stored is None:
                    values: dict[str, Any] = {self.config.target.id_column: plan.doc_id, **plan.row, **bookkeeping}
                    conn.execute(mirror.insert().values(values))
                else:
                    changed = {c: v for c, v in plan.row.items() if not same(stored[c], v)}
                    conn.execute(update(mirror).where(key == plan.doc_id).values({**changed, **bookkeeping}))

    def close(self) -> None:
        self.conn.close()
        self.db.dispose()


def interleaved(sides: list[Side], work: list[Phase], batch_size: int) -> dict[str, list[float]]:
    """Seconds per side per phase, the sides taking turns batch by batch.

    Each side first applies a few unmeasured rows of its own (other ids), so
    that first connections and statement caches are not on the clock.
    """
    for phase in phases(sides[0].config, WARM_UP_ROWS, first=sum(len(p.plans) for p in work[:1])):
        for side in sides:
            side.start_phase()
            side.apply(phase.plans, phase.docs)
    seconds = {side.name: [0.0] * len(work) for side in sides}
    for i, phase in enumerate(work):
        for side in sides:
            side.start_phase()
        for turn, start in enumerate(range(0, len(phase.plans), batch_size)):
            plans, docs = phase.plans[start : start + batch_size], phase.docs[start : start + batch_size]
            for k in range(len(sides)):
                side = sides[(turn + k) % len(sides)]
                started = time.perf_counter()
                side.apply(plans, docs)
                seconds[side.name][i] += time.perf_counter() - started
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
    result: dict[str, Any] = {"benchmark": "apply", "rows": n, "batch_size": sizes.batch_size}
    goals = []
    for target in TARGETS:
        result[target], found = run_on(servers, sizes, work, target)
        goals.extend(found)
    return result, goals


def run_on(servers: Servers, sizes: Sizes, work: list[Phase], target: str) -> tuple[dict[str, Any], list[Goal]]:
    n = sizes.apply_rows
    configs = {
        kind.name: servers.config(
            "bench-apply", servers.database(f"apply_{kind.name}", target), batch_size=sizes.batch_size
        )
        for kind in (StoreSide, RowByRow, EngineSide)
    }
    say(f"apply on {target}: {n} inserts then {n} updates; store, row by row and engine take turns batch by batch")
    sides = [kind(configs[kind.name]) for kind in (StoreSide, RowByRow, EngineSide)]
    try:
        seconds = interleaved(sides, work, sizes.batch_size)
    finally:
        for side in sides:
            side.close()
    prints = {fingerprint(config) for config in configs.values()}

    result: dict[str, Any] = {}
    goals = []
    on = "" if target == "mariadb" else f" on {target}"  # MariaDB's goals keep the names they always had
    for i, phase in enumerate(work):
        figures: dict[str, Any] = {}
        for side, per_phase in seconds.items():
            figures[f"{side}_s"] = rounded(per_phase[i])
            figures[f"{side}_rows_per_s"] = round(n / per_phase[i])
        ratio = seconds["row_by_row"][i] / seconds["store"][i]
        figures["ratio_store"] = rounded(ratio, 1)
        figures["ratio_engine"] = rounded(seconds["row_by_row"][i] / seconds["engine"][i], 1)
        result[phase.name] = figures
        goals.append(
            Goal("apply", f"{phase.name} throughput{on}, store / row by row", rounded(ratio, 1), ">=", GOAL_RATIO, "x")
        )
    result["same_table_contents"] = len(prints) == 1
    return result, goals
