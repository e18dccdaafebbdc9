"""Capped exponential backoff with jitter, shared by every retry loop."""

from __future__ import annotations

import random


def backoff_delay(failures: int, base: float = 5.0, cap: float = 300.0) -> float:
    """Seconds to wait after ``failures`` consecutive failures.

    "Equal jitter": half the delay is fixed, half random, so a fleet that failed
    together does not retry together, yet no retry comes absurdly early.
    """
    delay = min(cap, base * 2.0 ** max(0, failures - 1))
    return delay / 2 + random.uniform(0, delay / 2)
