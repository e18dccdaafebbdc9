"""Random histories against the real emulator and a real target, checked against a plain model.

Chosen scenarios find what their authors thought of; this finds the rest. A
seeded runner plays a random history of what happens to a mirror: documents
created, updated (reverts included), deleted, recreated, made invalid and
repaired; changes made while a run reads; rows edited, deleted, soft-deleted
and inserted in the table behind empsync's back; a mapped field added; the
table changed; writes failing mid-run; normal, force and dry runs; listen
sessions stopped and started, in either scope. Page and batch sizes (1 to 7),
``delete_mode``, ``listen_scope`` and the mass-delete guard vary per history.

The model is a dict of what Firestore holds and, per document, the rows the
table may hold for it (a version becomes possible once written; a check that
knows the answer narrows it to one). The invariants:

- after every force run, the table equals the model: every mapped column of
  every live row, deleted rows as ``delete_mode`` says (or kept, when the
  mass-delete guard was right to trip), and the rejects exactly the
  documents whose current version is invalid; drift made by hand counted as
  ``repaired``, and the audit log free of replays and in step with the rows;
- after every normal run, every document changed before the run began is
  mirrored;
- a dry run writes nothing;
- in listen mode, once writes stop, the table reaches the model within a
  bounded time, deletions included in ``collection`` scope;
- no run fails on data the model calls valid.

Each history prints its seed: ``EMPSYNC_FAULTS_SEED=N`` replays it (the
Firestore and database operations; the servers' timing may still differ).
On a failure the history so far is printed with the difference found.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Any

import pytest
from google.api_core.exceptions import Cancelled
from google.cloud import firestore
from sqlalchemy import delete, insert, select, update

from core import config as cfg
from core.engine import RunResult, SyncEngine
from core.events import BatchApplied
from core.mapping import RejectError, map_document
from core.service import SyncService
from core.times import utcnow

from ..conftest import write_docs
from ..service_support import failing_writes, wait_for
from .checks import check_history
from .support import FULL, seeded

pytestmark = pytest.mark.integration


def _emulator_retry(write: Callable[[], object], attempts: int = 3) -> None:
    """The history's own write, again if the emulator cancels it (it does, now and then, under load).

    A write is a ``set`` of the whole document, so one that did land and is
    written again leaves the same data: the model is unchanged either way.
    """
    for attempt in range(attempts):
        try:
            write()
            return
        except Cancelled:
            if attempt == attempts - 1:
                raise


# Ids that must stay distinct rows: case, a trailing space, accents, dots.
IDS = ("a", "A", "b", "b ", "é", "e", "dot.ted", "g", "h-1", "i")
FIELDS: dict[str, dict[str, Any]] = {
    "name": {"type": "string", "required": True, "max_length": 40},
    "salary": {"type": "integer"},
    "status": {"type": "string", "max_length": 12},
    "address.city": {"type": "string", "column": "city"},
    "remote": {"type": "boolean"},
}
NEW_FIELD = ("nickname", {"type": "string", "max_length": 30})
CITIES = ("Lisbon", "Porto", "Berlin", None)
HISTORIES = 12 if FULL else 2  # per target
STEPS = 60 if FULL else 28
LISTEN_WAIT_S = 45.0
ABSENT = object()  # no row at all


class Divergence(AssertionError):
    pass


@dataclass
class Model:
    docs: dict[str, dict[str, Any]] = field(default_factory=dict)  # what Firestore holds
    # Per id, what the table may hold for it: a frozen mapped row, "deleted", or ABSENT.
    possible: dict[str, set[Any]] = field(default_factory=dict)
    dirty: set[str] = field(default_factory=set)  # changed in Firestore since a run last read them
    # Rows edited behind empsync's back: True where only a force run can heal it (a value
    # edited under an unchanged hash), False where any run that reads the document may.
    drifted: dict[str, bool] = field(default_factory=dict)
    ghosts: set[str] = field(default_factory=set)  # rows with no document, inserted by hand
    versions: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # valid versions written, for reverts


def frozen(row: dict[str, Any]) -> tuple[tuple[str, Any], ...]:
    return tuple(sorted(row.items()))


class History:
    """One random history: its configuration, its model, its steps and their checks."""

    def __init__(self, rng: random.Random, emulator, client, project: str, url: str, name: str) -> None:
        self.rng, self.emulator, self.client, self.project, self.url = rng, emulator, client, project, url
        self.log: list[str] = [name]
        self.model = Model()
        self.fields = dict(FIELDS)
        self.table = "employees"
        self.delete_mode = rng.choice(["soft", "soft", "hard", "keep"])
        self.scope = rng.choice(["changes", "collection"])
        self.fraction = rng.choice([1.0, 1.0, 0.5, 0.25])
        self.page_size, self.batch_size = rng.randint(1, 7), rng.randint(1, 7)
        self.audit_from = 0  # audit rows of an earlier table belong to another history
        # Rows changed by hand: what the audit log says of them is no longer the whole story.
        self.unaudited: set[str] = set()
        self.full_read_done = False  # a complete read of the current scope has happened
        self.touched: list[str] = []  # documents a step wrote or deleted
        self.upserted: list[str] = []  # of those, the ones it wrote
        self.say(
            f"delete_mode={self.delete_mode} listen_scope={self.scope} max_delete_fraction={self.fraction} "
            f"page_size={self.page_size} batch_size={self.batch_size}"
        )

    # -- configuration -------------------------------------------------------------------

    def config(self, **sync: Any) -> cfg.Config:
        return cfg.from_dict(
            {
                "source": {
                    "project": self.project,
                    "emulator_host": self.emulator.host,
                    "updated_field": "updated_at",
                    "page_size": self.page_size,
                    "timeout": 20,
                },
                "target": {
                    "url": self.url,
                    "table": self.table,
                    "batch_size": self.batch_size,
                    "delete_mode": self.delete_mode,
                    "max_delete_fraction": self.fraction,
                },
                "sync": {"listen_scope": self.scope, "interval": 10, "force_interval": 7 * 86_400, **sync},
                "fields": self.fields,
            }
        )

    @contextmanager
    def engine(self) -> Iterator[SyncEngine]:
        engine = SyncEngine(self.config())
        try:
            engine.db.ensure_schema()
            yield engine
        finally:
            engine.close()

    def say(self, line: str) -> None:
        self.log.append(line)

    def expected(self, data: dict[str, Any]) -> tuple | None:
        """The mapped row of a version, or None when it is invalid (a reject)."""
        try:
            return frozen(map_document(self.config().fields, data))
        except RejectError:
            return None

    # -- what happens in Firestore ----------------------------------------------------------

    def write(self, doc_id: str, data: dict[str, Any], why: str) -> None:
        _emulator_retry(lambda: write_docs(self.client, {doc_id: {**data, "updated_at": firestore.SERVER_TIMESTAMP}}))
        self.model.docs[doc_id] = data
        self.model.dirty.add(doc_id)
        possible = self.model.possible.setdefault(doc_id, {ABSENT})
        if (row := self.expected(data)) is not None:
            possible.add(row)
            self.model.versions.setdefault(doc_id, []).append(data)
        self.touched.append(doc_id)
        self.upserted.append(doc_id)
        self.say(f"{why} {doc_id!r}: {data}")

    def employee(self) -> dict[str, Any]:
        rng = self.rng
        data: dict[str, Any] = {
            "name": rng.choice(["Ann", "Bo", "Cy", "Dee", "Ann B"]),
            "salary": rng.choice([100, 200, 300, 400]),
            "status": rng.choice(["active", "on_leave"]),
            "remote": rng.choice([True, False]),
            "password_hash": "never-read",
            "nickname": rng.choice(["x", "y", "z"]),
        }
        if (city := rng.choice(CITIES)) is not None:
            data["address"] = {"city": city}
        return data

    def create(self) -> None:
        free = [i for i in IDS if i not in self.model.docs]
        if free:
            self.write(self.rng.choice(free), self.employee(), "create")

    def update(self) -> None:
        if not self.model.docs:
            return self.create()
        doc_id = self.rng.choice(sorted(self.model.docs))
        earlier = self.model.versions.get(doc_id, [])
        if earlier and self.rng.random() < 0.3:
            return self.write(doc_id, dict(self.rng.choice(earlier)), "revert")
        data = dict(self.model.docs[doc_id])
        key = self.rng.choice(["salary", "status", "city", "remote", "nickname", "name"])
        if key == "city":
            data.pop("address", None)
            if (city := self.rng.choice(CITIES)) is not None:
                data["address"] = {"city": city}
        else:
            data[key] = self.employee()[key]
        if self.expected(data) is None:  # the repair of an invalid version
            data = self.employee()
        self.write(doc_id, data, "update")

    def make_invalid(self) -> None:
        if not self.model.docs:
            return self.create()
        doc_id = self.rng.choice(sorted(self.model.docs))
        bad = self.rng.choice([{"salary": "lots"}, {"name": None}, {"remote": "yes"}, {"status": "x" * 20}])
        self.write(doc_id, {**self.model.docs[doc_id], **bad}, "invalid")

    def delete(self) -> None:
        if not self.model.docs:
            return
        doc_id = self.rng.choice(sorted(self.model.docs))
        _emulator_retry(self.client.collection("employees").document(doc_id).delete)
        del self.model.docs[doc_id]
        self.model.dirty.add(doc_id)
        if self.delete_mode != "keep":
            self.model.possible[doc_id].add("deleted" if self.delete_mode == "soft" else ABSENT)
        self.touched.append(doc_id)
        self.say(f"delete {doc_id!r}")

    def recreate(self) -> None:
        gone = [i for i in IDS if i not in self.model.docs and i in self.model.possible]
        if gone:
            self.write(self.rng.choice(gone), self.employee(), "recreate")
        else:
            self.create()

    def firestore_change(self) -> None:
        self.rng.choice([self.create, self.update, self.update, self.delete, self.make_invalid, self.recreate])()

    # -- behind empsync's back ------------------------------------------------------------------

    def drift(self) -> None:
        with self.engine() as engine:
            m = engine.db.tables.mirror
            key = m.c[engine.config.target.id_column]
            with engine.db.connect() as conn:
                live = [r[0] for r in conn.execute(select(key).where(m.c.deleted_at.is_(None)))]
            candidates = [i for i in live if i in self.model.docs]
            kind = self.rng.choice(["update", "delete", "soft-delete", "ghost"])
            with engine.db.begin() as conn:
                if kind == "ghost" or not candidates:
                    ghost = f"ghost-{self.rng.randrange(1000)}"
                    if ghost in live:
                        return
                    row = {key.name: ghost, "name": "Nobody", "synced_at": utcnow(), "content_hash": "0" * 32}
                    conn.execute(insert(m).values(row))
                    self.model.ghosts.add(ghost)
                    self.say(f"drift: insert a row {ghost!r} with no document")
                    return
                doc_id = self.rng.choice(candidates)
                if kind == "update":
                    conn.execute(update(m).where(key == doc_id).values(salary=-1, status="edited"))
                elif kind == "delete":
                    conn.execute(delete(m).where(key == doc_id))
                else:
                    conn.execute(update(m).where(key == doc_id).values(deleted_at=utcnow()))
        self.model.drifted[doc_id] = self.model.drifted.get(doc_id, False) or kind == "update"
        self.unaudited.add(doc_id)
        self.say(f"drift: {kind} the row {doc_id!r}")

    def add_field(self) -> None:
        if NEW_FIELD[0] not in self.fields:
            self.fields[NEW_FIELD[0]] = NEW_FIELD[1]
            # The column is added empty: a row not written since holds NULL in it.
            for doc_id, rows in self.model.possible.items():
                self.model.possible[doc_id] = {
                    frozen({**dict(r), NEW_FIELD[0]: None}) if isinstance(r, tuple) else r for r in rows
                }
            self.rescope("map the field nickname")

    def change_table(self) -> None:
        if self.table != "employees":
            return
        with self.engine() as engine, engine.db.connect() as conn:
            ids = engine.db.tables.changes.c.id
            self.audit_from = conn.execute(select(ids).order_by(ids.desc()).limit(1)).scalar() or 0
        self.table = "staff"
        self.unaudited.clear()
        self.model.drifted.clear()
        self.model.ghosts.clear()
        # The new table starts empty: a row arrives with the version a run reads.
        self.model.possible = {i: {ABSENT} for i in self.model.possible}
        self.rescope("point [target] table at staff")

    def rescope(self, why: str) -> None:
        """A new mapping or table: the next run is a full read, so every document is due again."""
        self.model.dirty.update(self.model.docs)
        for doc_id, data in self.model.docs.items():
            if (row := self.expected(data)) is not None:
                self.model.possible.setdefault(doc_id, {ABSENT}).add(row)
        self.full_read_done = False
        self.say(why)

    # -- runs ---------------------------------------------------------------------------------

    def run(self, force: bool, dry_run: bool = False) -> None:
        rng = self.rng
        mid_run = not dry_run and rng.random() < 0.25
        fail = not dry_run and rng.random() < 0.15
        allow = force and not dry_run and rng.random() < 0.3
        due = set(self.model.dirty)
        before = self.table_state() if dry_run else None
        self.touched = []
        with self.engine() as engine:
            if mid_run:

                def during(event) -> None:
                    if isinstance(event, BatchApplied) and not self.touched:
                        self.firestore_change()

                engine.bus.subscribe(during)
            with failing_writes(engine, times=1) if fail else nullcontext([]) as failed:
                result = engine.run(force=force, dry_run=dry_run, allow_mass_delete=allow, trigger="model")
        mid = set(self.touched)
        self.say(
            f"{'dry ' if dry_run else ''}{'force' if force else 'normal'} run{' (allowed)' if allow else ''}"
            f"{f' with a change to {sorted(mid)} mid-run' if mid else ''}{' with a failing write' if failed else ''}: "
            f"{result.status} {result.reason or ''} {result.counts.as_dict()}"
        )
        if dry_run:
            if result.status != "ok":
                raise Divergence(f"a dry run failed: {result.reason}")
            if self.table_state() != before:
                raise Divergence("a dry run changed the table")
            return
        if failed:
            return  # a run that failed mid-way promises only what the next force run restores
        if result.incremental:
            self.check_normal(result, due - mid, uncertain=mid)
        else:
            self.check_full_read(result, allowed=allow, uncertain=mid)
        self.model.dirty = mid

    def check_normal(self, result: RunResult, due: set[str], uncertain: set[str]) -> None:
        """Every document changed before the run began is mirrored."""
        if result.status != "ok":
            raise Divergence(f"a normal run failed on valid data: {result.reason}")
        rows, rejects = self.table_state()
        for doc_id in sorted(due):
            if doc_id in self.model.docs:
                # A drifted row heals when its new version differs from the one it was written from,
                # and stays when the write gave the same content (the hash is trusted): perhaps, now.
                self.check_document(doc_id, rows, rejects, uncertain | set(self.model.drifted))
                if doc_id in self.model.drifted:
                    self.model.drifted[doc_id] = False

    def check_full_read(self, result: RunResult, allowed: bool, uncertain: set[str] = frozenset()) -> None:
        """After a complete read: the table equals the model (a force run also heals drift)."""
        rows, rejects = self.table_state()
        tripped = result.status == "failed" and "mass-delete guard" in (result.reason or "")
        # A read that finds no document at all (a mistyped collection, say) keeps every row and reject.
        empty = not self.model.docs and not uncertain
        if result.status != "ok" and not tripped:
            raise Divergence(f"a full read failed on valid data: {result.reason}")
        live = {i for i, r in rows.items() if r["deleted_at"] is None}
        pending = {i for i in live if i not in self.model.docs}
        if not uncertain and not allowed:
            if tripped and not (self.delete_mode != "keep" and len(pending) > self.fraction * len(live)):
                raise Divergence(f"the guard tripped on {len(pending)} deletions of {len(live)} live rows")
            if not tripped and result.counts.deleted > self.fraction * (len(live) + result.counts.deleted):
                raise Divergence(f"the guard let {result.counts.deleted} deletions of {len(live)} rows through")
        if not result.forced:  # hashes were trusted: a value edited by hand may stand
            uncertain = set(uncertain) | {i for i, force_only in self.model.drifted.items() if force_only}
        for doc_id in sorted(set(self.model.docs) | set(self.model.possible) | self.model.ghosts):
            self.check_document(doc_id, rows, rejects, uncertain, deletions_held=tripped or empty)
        invalid = {i for i, d in self.model.docs.items() if self.expected(d) is None}
        # A tripped guard distrusts what the read did not find: the rejects of absent documents stay
        # with their rows (a document it did read, now valid, still clears its reject).
        held = set(rejects) - set(self.model.docs) if tripped else set()
        if not empty and set(rejects) - uncertain - held != invalid - uncertain:
            raise Divergence(f"rejects {sorted(rejects)} but invalid documents {sorted(invalid)}")
        if result.forced:
            self.check_repairs(result, uncertain)
        self.check_audit()
        if result.forced:  # healed, but where the document is invalid: its old row stays as it was
            invalid_now = {i for i, d in self.model.docs.items() if self.expected(d) is None}
            self.model.drifted = {i: k for i, k in self.model.drifted.items() if i in uncertain | invalid_now}
        elif not self.full_read_done:  # a new scope rewrote rows whose hash changed: healed, perhaps
            self.model.drifted = dict.fromkeys(self.model.drifted, False)
        else:  # hashes were trusted: only a value edited under an unchanged hash may remain
            self.model.drifted = {i: k for i, k in self.model.drifted.items() if k}
        if not (tripped or empty):
            self.model.ghosts.clear()
        self.full_read_done = True

    def check_repairs(self, result: RunResult, uncertain: set[str]) -> None:
        """``repaired`` counts the drifted rows of unchanged valid documents: some certainly, the rest perhaps."""
        if not self.full_read_done:
            return  # repairs are told apart against a complete read of the same scope
        unchanged = {
            i: force_only
            for i, force_only in self.model.drifted.items()
            if i in self.model.docs and i not in self.model.dirty and i not in uncertain
        }
        unchanged = {i: k for i, k in unchanged.items() if self.expected(self.model.docs[i]) is not None}
        least = sum(unchanged.values())
        # Changed mid-run, or changed since the last read but perhaps only in unmapped fields (the
        # same hash, so the value difference is drift): repaired, perhaps.
        perhaps = len(set(self.model.drifted) & (uncertain | self.model.dirty))
        if not least <= result.counts.repaired <= len(unchanged) + perhaps:
            raise Divergence(
                f"repaired {result.counts.repaired}; drifted rows of unchanged documents: {unchanged} "
                f"(at least {least} only a force run heals)"
            )

    def check_document(
        self,
        doc_id: str,
        rows,
        rejects,
        uncertain: set[str] = frozenset(),
        deletions_held: bool = False,
        narrow: bool = True,
    ) -> None:
        """Whether the table's row and reject for ``doc_id`` are what the model allows; then what it allows now."""
        row = rows.get(doc_id)
        if row is None:
            found: Any = ABSENT
        elif row["deleted_at"] is not None:
            found = "deleted"
        else:
            found = frozen(self.mapped(row))
        possible = self.model.possible.get(doc_id, {ABSENT})
        data = self.model.docs.get(doc_id)
        if doc_id in self.model.drifted and (doc_id in uncertain or (data is not None and self.expected(data) is None)):
            return  # edited by hand and not (certainly) healed yet: any row will do until a force run
        loose = doc_id in uncertain
        if data is None:  # gone from Firestore, or a row nobody wrote
            want = {"soft": {"deleted", ABSENT}, "hard": {ABSENT}, "keep": None}[self.delete_mode]
            if want is not None and not deletions_held and not loose and found not in want:
                raise Divergence(
                    f"{doc_id!r}: the table holds {_show(found)}, the document is gone ({self.delete_mode})"
                )
        elif (current := self.expected(data)) is not None:
            if loose:
                if found not in possible | {ABSENT, "deleted"}:
                    raise Divergence(f"{doc_id!r}: the table holds {_show(found)}, none of {possible}")
            elif found != current:
                raise Divergence(f"{doc_id!r}: the table holds {_show(found)}, Firestore {_show(current)}")
            elif doc_id in rejects:
                raise Divergence(f"{doc_id!r}: valid, yet rejected: {rejects[doc_id]}")
        elif not loose:
            if doc_id not in rejects:
                raise Divergence(f"{doc_id!r}: invalid in Firestore, but no reject recorded")
            if found not in possible:
                raise Divergence(f"{doc_id!r}: invalid; the table holds {_show(found)}, none of {possible}")
        if narrow:
            self.model.possible[doc_id] = (possible | {found}) if loose else {found}

    def mapped(self, row: dict[str, Any]) -> dict[str, Any]:
        return {spec.column: row[spec.column] for spec in self.config().fields}

    def table_state(self) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
        with self.engine() as engine:
            with engine.db.connect() as conn:
                found = conn.execute(select(engine.db.tables.mirror)).mappings()
                rows = {r[engine.config.target.id_column]: dict(r) for r in found}
            rejects = {r["document_id"]: r["reason"] for r in engine.state.rejects()}
        return rows, rejects

    def check_audit(self) -> None:
        """The audit log of this table holds no replayed change (see checks.check_history)."""
        with self.engine() as engine, engine.db.connect() as conn:
            t = engine.db.tables.changes
            audit = conn.execute(
                select(t.c.id, t.c.run_id, t.c.document_id, t.c.operation, t.c.field, t.c.old_value, t.c.new_value)
                .where(t.c.id > self.audit_from)
                .order_by(t.c.id)
            ).all()
        audit = [a for a in audit if a[2] not in self.unaudited and not a[2].startswith("ghost-")]
        report = check_history(audit, self.delete_mode == "hard")
        if report.replays:
            raise Divergence(f"the audit log holds replayed changes: {report.replays[:3]}")

    # -- listen sessions ----------------------------------------------------------------------------

    def listen(self) -> None:
        """A service listening while documents change; the table reaches the model once writes stop."""
        service = SyncService(self.config(mode="listen"))
        service.start()
        dirty_before = set(self.model.dirty)
        self.touched, self.upserted = [], []
        try:
            wait_for(lambda: service.snapshot().get("listen_state") == "listening", 60, "the listener")
            with failing_writes(service.engine, times=1) if self.rng.random() < 0.3 else nullcontext([]) as failed:
                for _ in range(self.rng.randint(1, 6)):
                    self.firestore_change()
            touched, upserted = set(self.touched), set(self.upserted)
            self.say(f"listen session ({self.scope}){' with a failing write' if failed else ''}: {sorted(touched)}")
            gone = set(self.model.possible) - set(self.model.docs)
            deleted_now = (touched - upserted) & gone
            if self.scope == "changes":
                # The stream reports the deletions of the documents it watches: those written while it
                # listened (one changed only before may be behind the watermark of a run at its start).
                must_go = deleted_now & upserted
            elif self.fraction >= 1.0:  # every deletion, those made while no stream was open too
                must_go = gone
            else:  # those older than the stream may be held back by the guard
                must_go = deleted_now
            problem: list[str] = []
            try:
                wait_for(lambda: self.listen_converged(must_go, problem), LISTEN_WAIT_S, "listen mode to converge")
            except AssertionError:
                raise Divergence(f"listen mode did not converge in {LISTEN_WAIT_S:.0f} s: {problem}") from None
        finally:
            assert service.stop(15), "the listening service did not stop"
        rows, rejects = self.table_state()
        for doc_id in sorted(set(self.model.docs) | must_go):
            self.check_document(doc_id, rows, rejects, set(self.model.drifted))
        # What the session's runs (a catch-up, a force run at its start) healed is no longer certain.
        self.model.drifted = dict.fromkeys(self.model.drifted, False)
        self.model.dirty -= touched | dirty_before

    def listen_converged(self, must_go: set[str], problem: list[str]) -> bool:
        rows, rejects = self.table_state()
        try:
            for doc_id in sorted(set(self.model.docs) | must_go):
                self.check_document(doc_id, rows, rejects, set(self.model.drifted), narrow=False)
        except Divergence as exc:
            problem[:] = [str(exc)]
            return False
        return True

    # -- the history ----------------------------------------------------------------------------------

    def play(self, steps: int) -> None:
        rng = self.rng
        actions: list[tuple[float, Callable[[], None]]] = [
            (4, self.firestore_change),
            (2, lambda: self.run(force=False)),
            (2, lambda: self.run(force=True)),
            (0.5, lambda: self.run(force=rng.random() < 0.5, dry_run=True)),
            (1, self.drift),
            (0.2, self.add_field),
            (0.15, self.change_table),
            (0.6, self.listen),
        ]
        weights = [w for w, _ in actions]
        for _ in range(rng.randint(2, 5)):
            self.create()
        for _ in range(steps):
            rng.choices([a for _, a in actions], weights)[0]()
        # Every history ends with a force run (past the guard): the table equals the model.
        self.touched = []
        with self.engine() as engine:
            result = engine.run(force=True, allow_mass_delete=True, trigger="model")
        self.say(f"final force run: {result.status} {result.reason or ''} {result.counts.as_dict()}")
        self.check_full_read(result, allowed=True)


def _show(found: Any) -> str:
    return "no row" if found is ABSENT else repr(found)


@pytest.mark.parametrize("target", ["sqlite", "mariadb"])
def test_random_histories_leave_the_table_equal_to_the_model(target, emulator, request, tmp_path):
    for n in range(HISTORIES):
        rng = seeded(f"model-{target}-{n}")
        project = f"m-{rng.randrange(16**10):010x}"
        if target == "sqlite":
            url = f"sqlite:///{tmp_path / f'model-{n}.db'}"
        else:
            server = request.getfixturevalue("mariadb")
            url = server.url(server.create_database(project.replace("-", "_")))
        client = _client(emulator.host, project)
        history = History(rng, emulator, client, project, url, f"history {n} on {target} ({project})")
        try:
            history.play(STEPS)
        except AssertionError as exc:
            steps = "\n  ".join(history.log)
            raise AssertionError(f"{exc}\nhistory:\n  {steps}") from None
        finally:
            client.close()


def _client(host: str, project: str):
    from .support import client_for

    return client_for(host, project)
