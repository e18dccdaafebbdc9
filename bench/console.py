"""(f) The console under load: how soon a key's effect reaches the screen during a force run.

The console is the real one, ``tui.app.EmpsyncApp`` hosting a real
``SyncService``, run headless with ``App.run_test()`` against the bench's
emulator and MariaDB. A collection of ``console_docs`` employees is seeded
once; each session gets a fresh database, which a headless force run fills
first, so the console starts idle (nothing is due) and its own force run,
started with ``f``, reads and compares every document, as the daily force
run of a synced table does.

What is measured, per key: from the moment the key is due to the first
frame that shows its effect. A sender thread sleeps until the key is due and
posts it to the App (``post_message`` from a thread, as a terminal driver's
input thread does), so waking and waiting for the GIL count, as they do for
a terminal's input thread woken by the key's bytes. The keys alternate: ``?``
opens the help screen, ``escape`` closes it; the effect is on the screen
when the App composes a frame of the screen now on top (the help screen, or
the main screen again): ``App._display``, which every frame of the top
screen goes through, notes the moment. Headless, the frame is not written
to a terminal; that part costs the same with or without load. The next key
is due 100 to 200 ms after the frame, at random, so that keys do not fall in
step with the batches. Beside each latency, the event loop thread's own CPU
time over it (the work no hand-off of the GIL can save) and its time
runnable but waiting for a CPU (other processes' load, from Linux's
schedstat); what is left is mostly the wait for the GIL. Beside each run,
the garbage collector's full collections in it, which stop every thread.

Each round runs one session per variant, the order reversed every other
round: the console as it ships (``FIX``: the quiet heap, and the sync giving
way while a key's frame is drawn, core/turns.py), the console with nothing
done (``as_is``), and the other candidate remedies, measured so that the
choice stays checked: the quiet heap alone (the remedy before turns), the
quiet heap with CPython's rate of young collections (the remedy as it first
shipped), a shorter GIL switch interval, and the worker sleeping briefly
between documents every so often. Keys are sent as a terminal driver's input
thread sends them (``Driver.process_message``). For each, the force run's wall
time and CPU seconds (this process, every thread, from SyncStarted to
SyncFinished); a variant's cost is the median of the rounds' ratios of its
wall time to ``as_is``'s. The idle baseline is the same keys while no run
goes on (in every session, before its force run). Percentiles pool every
round's samples. On a shared two-core host, other processes' load moves the
idle baseline as much as the run does: compare the variants, and each with it.
"""

from __future__ import annotations

import asyncio
import gc
import inspect
import os
import random
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from textual import events
from textual.screen import Screen

from core import engine as engine_module
from core.config import Config
from core.engine import SyncEngine
from core.events import Event, SyncFailed, SyncFinished, SyncStarted
from core.service import SyncService
from core.turns import Turns
from tui import heap
from tui.app import EmpsyncApp
from tui.screens.help import HelpScreen

from .harness import Servers, say, unique
from .options import Sizes
from .report import Goal, median, percentiles, rounded

GOAL_P99_MS = 100.0
GOAL_COST = 1.05
KEY_GAP_S = (0.1, 0.2)  # between a key's frame and the next key: random in this range
FRAME_TIMEOUT_S = 30.0
IDLE_KEYS = 60  # per session
READY_TIMEOUT_S = 120.0
RUN_TIMEOUT_S = 900.0
SIZE = (140, 40)


class TimedConsole(EmpsyncApp):
    """The console, noting when a frame of the screen ``expect`` waits for is composed."""

    CSS_PATH = Path(inspect.getfile(EmpsyncApp)).with_name(str(EmpsyncApp.CSS_PATH))  # not beside this module

    def __init__(self, *args: Any, quiet_heap: bool, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.QUIET_HEAP = quiet_heap
        self._wanted: Callable[[Screen], bool] | None = None
        self._shown = threading.Event()
        self.loop_native_id = 0
        self.shown_at = self.shown_cpu = self.shown_queued = 0.0

    def expect(self, wanted: Callable[[Screen], bool]) -> threading.Event:
        self._shown.clear()
        self._wanted = wanted
        return self._shown

    def _display(self, screen: Screen, renderable: Any) -> None:
        super()._display(screen, renderable)
        wanted = self._wanted
        if wanted is not None and renderable is not None and not self._batch_count and wanted(screen):
            self.shown_at, self.shown_cpu = time.perf_counter(), time.thread_time()
            self.shown_queued = run_queue_s(threading.get_native_id())
            self._wanted = None
            self._shown.set()


def run_queue_s(native_id: int) -> float:
    """Seconds the thread has spent runnable but waiting for a CPU (Linux schedstat); 0 where unknown."""
    try:
        with open(f"/proc/self/task/{native_id}/schedstat") as f:
            return int(f.read().split()[1]) / 1e9
    except (OSError, IndexError, ValueError):
        return 0.0


def _tail(values: list[float]) -> dict[str, float]:
    return {k: v for k, v in percentiles(values).items() if k in ("p50", "p99")} if len(values) > 1 else {}


@dataclass
class Keys:
    """Per key: milliseconds from due to frame; of those, the event loop thread's own CPU and its wait
    for a CPU (other processes' load). The rest is mostly the wait for the GIL."""

    latency_ms: list[float] = field(default_factory=list)
    loop_cpu_ms: list[float] = field(default_factory=list)
    loop_queued_ms: list[float] = field(default_factory=list)

    def extend(self, other: Keys) -> None:
        self.latency_ms += other.latency_ms
        self.loop_cpu_ms += other.loop_cpu_ms
        self.loop_queued_ms += other.loop_queued_ms

    def summary(self) -> dict[str, Any]:
        return {
            **percentiles(self.latency_ms),
            "samples": len(self.latency_ms),
            "loop_cpu_ms": _tail(self.loop_cpu_ms),
            "loop_waiting_for_a_cpu_ms": _tail(self.loop_queued_ms),
        }


def press_keys(
    app: TimedConsole, main: Screen, loop_thread: int, rng: random.Random, count: int, until: threading.Event
) -> Keys:
    """``?`` and ``escape`` in turn, until ``count`` samples or ``until`` is set; leaves the main screen on top.

    Runs on a thread of its own; ``loop_thread`` is the event loop's, whose CPU clock is read at each key.
    Only keys due before ``until`` was set are counted.
    """
    keys = Keys()
    loop_clock = time.pthread_getcpuclockid(loop_thread)
    loop_native_id = app.loop_native_id
    driver = app._driver
    assert driver is not None, "the console is running"
    opening = True
    while (len(keys.latency_ms) < count and not until.is_set()) or not opening:
        due = time.perf_counter() + rng.uniform(*KEY_GAP_S)
        time.sleep(max(0.0, due - time.perf_counter()))
        counted = not until.is_set()
        key = events.Key("question_mark", "?") if opening else events.Key("escape", "\x1b")
        shown = app.expect((lambda s: isinstance(s, HelpScreen)) if opening else (lambda s: s is main))
        loop_cpu, loop_queued = time.clock_gettime(loop_clock), run_queue_s(loop_native_id)
        driver.process_message(key)  # what a terminal driver's input thread does with a key it read
        if not shown.wait(FRAME_TIMEOUT_S):
            raise RuntimeError(f"console: {key.key!r} had no effect on the screen within {FRAME_TIMEOUT_S:.0f} s")
        if counted:
            keys.latency_ms.append((app.shown_at - due) * 1000)
            keys.loop_cpu_ms.append((app.shown_cpu - loop_cpu) * 1000)
            keys.loop_queued_ms.append((app.shown_queued - loop_queued) * 1000)
        opening = not opening
    return keys


@dataclass
class RunClock:
    """When the console's force run started and ended, by the wall clock and this process's CPU clock."""

    started: threading.Event = field(default_factory=threading.Event)
    finished: threading.Event = field(default_factory=threading.Event)
    start: tuple[float, float] = (0.0, 0.0)
    end: tuple[float, float] = (0.0, 0.0)
    outcome: str = ""

    def on_event(self, event: Event) -> None:  # on the worker thread
        now = (time.perf_counter(), time.process_time())
        if isinstance(event, SyncStarted) and event.kind == "force":
            self.start = now
            self.started.set()
        elif self.started.is_set() and not self.finished.is_set():
            if isinstance(event, SyncFinished):
                self.end, self.outcome = now, event.result.status
                self.finished.set()
            elif isinstance(event, SyncFailed):
                self.end, self.outcome = now, f"failed: {event.error}"
                self.finished.set()


@dataclass
class Collections:
    """The garbage collector's full collections: when each ended, and how long it stopped the process."""

    started: float = 0.0
    full: list[tuple[float, float]] = field(default_factory=list)  # (end, seconds)

    def __call__(self, phase: str, info: dict[str, int]) -> None:  # a gc.callbacks entry, on any thread
        if info["generation"] != 2:
            return
        now = time.perf_counter()
        if phase == "start":
            self.started = now
        else:
            self.full.append((now, now - self.started))

    def within(self, start: float, end: float) -> dict[str, Any]:
        pauses = [seconds * 1000 for at, seconds in self.full if start <= at <= end]
        return {"count": len(pauses), "total_ms": rounded(sum(pauses), 1), "max_ms": rounded(max(pauses, default=0), 1)}


@dataclass
class Session:
    idle: Keys
    busy: Keys
    run_s: float
    run_cpu_s: float
    full_collections: dict[str, Any]
    turns_given_s: float  # the sync's threads waiting for the console, in all (both threads' waits added)


async def _until(condition: Callable[[], Any], what: str, timeout: float) -> None:
    end = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > end:
            raise RuntimeError(f"console: timed out after {timeout:.0f} s waiting for {what}")
        await asyncio.sleep(0.05)


@dataclass(frozen=True)
class Variant:
    """One way of running the console: which of the candidate remedies are on."""

    name: str
    quiet_heap: bool = False  # the console's own remedy: EmpsyncApp.QUIET_HEAP, see tui/heap.py
    young_every: int | None = None  # with quiet_heap: heap.YOUNG_EVERY; None: as the console ships
    switch_s: float | None = None  # sys.setswitchinterval while the console runs; None: the default
    pace: tuple[float, float] | None = None  # the worker sleeps (_, this many s) every (this many s, _) of work
    turns: bool = False  # the sync gives way while a key's frame is drawn (core/turns.py)


VARIANTS = (
    Variant("as_is"),
    Variant("turns", quiet_heap=True, turns=True),
    Variant("quiet_heap", quiet_heap=True),
    Variant("old_quiet_heap", quiet_heap=True, young_every=700),  # the youngest generation as often as CPython's
    Variant("switch_1ms", switch_s=0.001),
    Variant("worker_yields", pace=(0.01, 0.0005)),
)


@contextmanager
def paced(pace: tuple[float, float] | None) -> Iterator[None]:
    """The candidate remedy on the worker's side: a short sleep (the GIL free for the event loop to take)
    between documents, once every so often of work. Wrapped around the engine's mapping of each document."""
    if pace is None:
        yield
        return
    every, pause = pace
    mapped = engine_module.map_document
    due = [time.perf_counter() + every]

    def map_document(*args: Any, **kwargs: Any) -> Any:
        now = time.perf_counter()
        if now >= due[0]:
            time.sleep(pause)
            due[0] = time.perf_counter() + every
        return mapped(*args, **kwargs)

    engine_module.map_document = map_document
    try:
        yield
    finally:
        engine_module.map_document = mapped


async def _keys_during_a_force_run(
    app: TimedConsole, service: SyncService, clock: RunClock, seed: int
) -> tuple[Keys, Keys]:
    """Keys while idle, then ``f`` and keys until the force run has finished: (idle, busy)."""
    rng = random.Random(seed)
    async with app.run_test(size=SIZE, notifications=True):
        await _until(
            lambda: service.snapshot().get("is_leader") and service.snapshot().get("state") == "idle",
            "the console's service to lead, idle",
            READY_TIMEOUT_S,
        )
        main, loop_thread = app.screen, threading.get_ident()
        app.loop_native_id = threading.get_native_id()
        idle = await asyncio.to_thread(press_keys, app, main, loop_thread, rng, IDLE_KEYS, threading.Event())
        app.post_message(events.Key("f", "f"))
        await _until(clock.started.is_set, "the force run to start", READY_TIMEOUT_S)
        busy = await asyncio.to_thread(press_keys, app, main, loop_thread, rng, sys.maxsize, clock.finished)
        await _until(clock.finished.is_set, "the force run to finish", RUN_TIMEOUT_S)
        await asyncio.to_thread(service.stop)  # before the App closes: no event arrives while it does
    return idle, busy


async def _session(config: Config, variant: Variant, seed: int) -> Session:
    """One console, run the variant's way."""
    turns = Turns() if variant.turns else None
    service = SyncService(config, turns=turns)
    clock = RunClock()
    service.subscribe(clock.on_event)
    app = TimedConsole(service, config, quiet_heap=variant.quiet_heap, turns=turns)
    default_switch = sys.getswitchinterval()
    if variant.switch_s is not None:
        sys.setswitchinterval(variant.switch_s)
    collections = Collections()
    gc.callbacks.append(collections)
    young_every = heap.YOUNG_EVERY
    if variant.young_every is not None:
        heap.YOUNG_EVERY = variant.young_every
    try:
        with paced(variant.pace):
            idle, busy = await _keys_during_a_force_run(app, service, clock, seed)
    finally:
        gc.callbacks.remove(collections)
        heap.YOUNG_EVERY = young_every
        sys.setswitchinterval(default_switch)
        service.stop()
    if clock.outcome != "ok":
        raise RuntimeError(f"console: the force run ended {clock.outcome}")
    if len(busy.latency_ms) < 2:
        raise RuntimeError(f"console: the force run was over after {len(busy.latency_ms)} key(s); use more documents")
    (start, start_cpu), (end, end_cpu) = clock.start, clock.end
    given = turns.given_s if turns is not None else 0.0
    return Session(idle, busy, end - start, end_cpu - start_cpu, collections.within(start, end), given)


def _filled(servers: Servers, project: str, sizes: Sizes) -> Config:
    """A fresh database, synced once: the console finds nothing due and its force run compares every row."""
    config = servers.config(
        project, servers.database("console"), page_size=sizes.page_size, batch_size=sizes.batch_size
    )
    config = replace(config, sync=replace(config.sync, interval=3600, force_interval=7 * 86_400))
    engine = SyncEngine(config)
    try:
        result = engine.run(force=True, trigger="bench")
    finally:
        engine.close()
    if result.status != "ok":
        raise RuntimeError(f"console: the first sync failed: {result.reason}")
    return config


def _pooled(collections: list[dict[str, Any]]) -> dict[str, Any]:
    """Full collections over the rounds: the median run's count and stop, the longest stop of all."""
    return {
        "count": median([c["count"] for c in collections]),
        "total_ms": rounded(median([c["total_ms"] for c in collections]), 1),
        "max_ms": max(c["max_ms"] for c in collections),
    }


FIX = "turns"  # the variant the console ships with
BASELINE = "as_is"


def chosen_variants() -> tuple[Variant, ...]:
    """All of them, or those EMPSYNC_BENCH_VARIANTS names (comma-separated); the baseline and the fix always."""
    wanted = {name.strip() for name in os.environ.get("EMPSYNC_BENCH_VARIANTS", "").split(",") if name.strip()}
    return tuple(v for v in VARIANTS if not wanted or v.name in wanted | {BASELINE, FIX})


def run(servers: Servers, sizes: Sizes) -> tuple[dict[str, Any], list[Goal]]:
    variants = chosen_variants()
    n = sizes.console_docs
    project = unique("bench-console")
    seeded = servers.seed(project, n)
    names = [v.name for v in variants]
    say(
        f"console: seeded {n} documents in {seeded:.1f} s; {sizes.pairs} rounds of a force run each: {', '.join(names)}"
    )
    busy: dict[str, Keys] = {name: Keys() for name in names}
    idle: dict[str, Keys] = {name: Keys() for name in names}
    rounds = []
    for i in range(sizes.pairs):
        order = variants if i % 2 == 0 else variants[::-1]
        figures: dict[str, Any] = {"order": "-".join(v.name for v in order)}
        for variant in order:
            got = asyncio.run(_session(_filled(servers, project, sizes), variant, seed=i))
            figures[f"{variant.name}_full_collections"] = got.full_collections
            figures[f"{variant.name}_turns_given_s"] = got.turns_given_s
            busy[variant.name].extend(got.busy)
            idle[variant.name].extend(got.idle)
            figures[f"{variant.name}_run_s"], figures[f"{variant.name}_run_cpu_s"] = got.run_s, got.run_cpu_s
            figures[f"{variant.name}_p99_ms"] = p99 = percentiles(got.busy.latency_ms)["p99"]
            say(f"console: round {i + 1}, {variant.name}: key to screen p99 {p99:.0f} ms; force run {got.run_s:.1f} s")
        for name in names:
            figures[f"{name}_cost"] = figures[f"{name}_run_s"] / figures[f"{BASELINE}_run_s"]
        rounds.append(figures)
    sides = {
        name: {
            "busy_ms": busy[name].summary(),
            "idle_ms": idle[name].summary(),
            **{f"run_{what}": rounded(median([r[f"{name}_run_{what}"] for r in rounds])) for what in ("s", "cpu_s")},
            "cost": rounded(median([r[f"{name}_cost"] for r in rounds])),
            "full_collections": _pooled([r[f"{name}_full_collections"] for r in rounds]),
        }
        for name in names
    }
    result = {
        "benchmark": "console",
        "target": "mariadb",
        "documents": n,
        "fix": FIX,
        "seed_s": rounded(seeded, 2),
        "rounds": [{k: rounded(v) if isinstance(v, float) else v for k, v in r.items()} for r in rounds],
        **sides,
    }
    goals = [
        Goal(
            "console", "key to screen during a force run, p99", sides[FIX]["busy_ms"]["p99"], "<=", GOAL_P99_MS, " ms"
        ),
        Goal(
            "console",
            "force run wall time, with / without the fix (median of rounds)",
            sides[FIX]["cost"],
            "<=",
            GOAL_COST,
        ),
    ]
    return result, goals
