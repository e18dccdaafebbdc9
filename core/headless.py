"""``empsync --no-ui``: the service with logs on stderr, for systemd and containers.

It never imports Textual. SIGTERM, SIGINT or SIGHUP (a closed terminal or
SSH session) asks the worker to finish or abandon its batch; the process
exits 0 once the lock is released, the run marked and the leader key removed.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from types import FrameType

from .config import Config
from .contracts import Snapshot
from .events import Event, StatusChanged, SyncFailed
from .logs import configure
from .service import SyncService

log = logging.getLogger("empsync")

STOP_TIMEOUT_S = 9.0
LISTEN_REPORT_S = 60.0  # how often --no-ui reports the listener's lag in listen mode


def log_event(event: Event) -> None:
    """The events the engine does not already log itself."""
    if isinstance(event, StatusChanged):
        log.info("Status: %s%s", event.state, f" ({event.detail})" if event.detail else "")
    elif isinstance(event, SyncFailed) and event.hint:
        log.info("Hint: %s", event.hint)


def log_listen_health(snapshot: Snapshot) -> None:
    lag = snapshot.get("lag_ms")
    log.info(
        "Listener %s: lag %s, backlog %s, %s reconnects",
        snapshot.get("listen_state", "?"),
        "-" if lag is None else f"{lag} ms",
        snapshot.get("listen_backlog", 0),
        snapshot.get("listen_reconnects", 0),
    )


STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


def run_headless(config: Config, log_format: str = "text", verbose: bool = False) -> int:
    # -v: empsync's debug lines, and libraries' tracebacks in full.
    configure(level=logging.DEBUG if verbose else logging.INFO, fmt=log_format, detail=verbose)
    service = SyncService(config)
    api = None
    if config.api.enabled:
        from .api import ControlApi

        api = ControlApi(service, config.api)  # a bad token, host or port is a ConfigError: exit 2
    service.subscribe(log_event)

    stopping = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("Received %s: stopping", signal.Signals(signum).name)
        stopping.set()

    for signum in STOP_SIGNALS:
        signal.signal(signum, on_signal)
    service.start()
    if api is not None:
        api.start()
    next_report = time.monotonic() + LISTEN_REPORT_S
    while not stopping.wait(1.0):
        if not service.alive:
            log.error("the worker thread ended unexpectedly")
            return 1
        if config.sync.mode == "listen" and time.monotonic() >= next_report:
            next_report = time.monotonic() + LISTEN_REPORT_S
            log_listen_health(service.snapshot())
    if api is not None:
        api.stop()
    clean = service.stop(STOP_TIMEOUT_S)
    if not clean:
        log.warning("the current batch did not finish in time; exiting anyway (it is rolled back)")
    return 0
