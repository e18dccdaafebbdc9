"""Shorter, rarer stops for the console: the garbage collector tuned for a process that keeps a screen.

A key reaches the screen only when the event loop's thread runs, and what
kept it away longest while a force run went on was neither the worker's
Python code nor its wait for the network but the cyclic garbage collector. A
full collection stops every thread while it walks every tracked object: with
Textual, the console's widgets and caches, the Firestore client and SQLAlchemy
loaded, a few hundred thousand of them, 100 to 900 ms a collection on a
loaded two-core host. A force run's pages of documents live just long enough
to reach the oldest generation, so CPython's default (look at it every tenth
collection of the middle one) made some forty of them in a 50,000-document
force run, stopping it for 10 to 20 % of its time (``python -m bench --only
console`` counts them).

Three changes, for the console only (headless mode has no frames to keep and
leaves the collector as it is): what start-up built lives as long as the
process (modules, classes, the App and its panes, the clients), so it is
frozen (``gc.freeze``), left out of every later walk; the oldest generation
is looked at ten times less often; and the youngest is collected after
10,000 new objects, not 700. That last one is what keeps a run's documents
out of the oldest generation at all: with 700, a page of documents outlives
two young collections while it waits to be written, so the oldest filled up
and was walked a few times a run even at a tenth of the rate; with 10,000,
a page is freed (by reference counting) before it is old, and a 50,000-
document force run makes no full collection. A young collection of 10,000
objects is a few milliseconds. Reference counting still frees almost
everything at once; only garbage in cycles waits longer.
"""

from __future__ import annotations

import gc

OLDEST_EVERY = 100  # collections of the middle generation between looks at the oldest (CPython: 10)
YOUNG_EVERY = 10_000  # net allocations of tracked objects between collections of the youngest (CPython: 700)


def quieten() -> tuple[int, ...]:
    """Freeze what is alive now and make full collections rarer; returns the thresholds to restore."""
    previous = gc.get_threshold()
    gc.set_threshold(max(previous[0], YOUNG_EVERY), previous[1], max(previous[2], OLDEST_EVERY))
    freeze_survivors()
    return previous


def freeze_survivors() -> None:
    """Leave every object alive now out of all later collections, after collecting what is garbage."""
    gc.collect()
    gc.freeze()


def restore(thresholds: tuple[int, ...]) -> None:
    """The collector as it was: once the console closes, what was frozen may become garbage."""
    gc.set_threshold(*thresholds)
    gc.unfreeze()
