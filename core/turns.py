"""Turns: another part of this process asking the sync's threads to step aside for a moment.

Python runs one thread at a time (the GIL). While a sync works through a
force run its threads want the GIL all the time, and a thread that needs it
for a short burst, a console drawing the effect of a key, gets it back only
every few milliseconds (the switch interval), after each of them has had its
go: a key that needs 20 ms of the console's own work reached the screen
after 60 to 100 ms. So the sync's threads give way at their safe points
(between documents) while a turn is claimed: the console claims one when a
key arrives and releases it once the key's frame is drawn.

A turn costs the sync little: while the console draws, it holds the GIL
anyway. Each turn is bounded (``longest_s``), so a claim never released
cannot stall a run; an unclaimed ``give()`` is one attribute read. Headless
service and one-shot commands never claim.
"""

from __future__ import annotations

import threading
import time

LONGEST_S = 0.1  # a turn at most: a key's frame takes 10 to 30 ms of the console's work


class Turns:
    """Claimed by whoever needs the GIL soon; given by the sync's threads between documents."""

    def __init__(self, longest_s: float = LONGEST_S) -> None:
        self.longest_s = longest_s
        self.claimed = False  # read without a lock: a stale read delays one document, no more
        self._released = threading.Event()
        self._until = 0.0  # monotonic deadline of the claimed turn
        self.given_s = 0.0  # seconds the sync's threads have waited, in all (for the curious, and tests)
        self._given_lock = threading.Lock()

    def claim(self) -> None:
        """A turn, from now until ``release()`` or ``longest_s`` from now; from any thread."""
        self._until = time.monotonic() + self.longest_s
        self._released.clear()
        self.claimed = True

    def release(self) -> None:
        self.claimed = False
        self._released.set()

    def give(self) -> None:
        """A sync thread's safe point: returns at once unless a turn is claimed, else when it ends."""
        if not self.claimed:
            return
        started = time.monotonic()
        left = self._until - started
        if left <= 0:  # over: its claimant did not release it in time
            return
        self._released.wait(left)
        with self._given_lock:
            self.given_s += time.monotonic() - started
