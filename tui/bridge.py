"""The only way other threads reach the console: messages posted to the App.

``Bridge.on_event`` is the service subscriber (it runs on the worker thread)
and ``ConsoleLogHandler`` takes log records from any thread. Both only build a
message and ``post_message`` it; neither touches a widget.

Back-pressure, after Toolong: the bridge counts messages posted but not yet
handled. When the event loop falls that far behind, log lines are shed (and
counted: the App's flush timer reports how many in the Log) rather than queued without bound;
sync events are few (one per batch) and always go through.
"""

from __future__ import annotations

import logging
import threading
from collections import deque

from textual.message import Message
from textual.message_pump import MessagePump

from core.events import Event
from core.logs import add_filters, record_text
from core.times import from_timestamp

from .messages import CoreEvent, LogLine

MAX_IN_FLIGHT = 1000  # log lines beyond this many unhandled messages are shed
EARLY_LINES = 2000  # log lines kept from before the App is ready


class Bridge:
    def __init__(self, target: MessagePump, max_in_flight: int = MAX_IN_FLIGHT) -> None:
        self._target = target
        self._max = max_in_flight
        self._lock = threading.Lock()
        self._in_flight = 0
        self._dropped = 0

    def on_event(self, event: Event) -> None:
        """The service subscriber: called on the worker thread; the event goes to the App as it is."""
        self.post(CoreEvent(event))

    def post(self, message: Message) -> bool:
        is_log = isinstance(message, LogLine)
        with self._lock:
            if is_log and self._in_flight >= self._max:
                self._dropped += 1
                return False
            self._in_flight += 1
        if self._target.post_message(message):
            return True
        with self._lock:  # the App is closing: nothing will handle it
            self._in_flight -= 1
        return False

    def handled(self) -> None:
        """Called on the event loop once per message handled."""
        with self._lock:
            self._in_flight = max(0, self._in_flight - 1)

    def take_dropped(self) -> int:
        """Lines shed since the last call (the App reports them in the Log)."""
        with self._lock:
            dropped, self._dropped = self._dropped, 0
            return dropped

    @property
    def in_flight(self) -> int:
        with self._lock:
            return self._in_flight


class ConsoleLogHandler(logging.Handler):
    """Log records become ``LogLine`` messages; nothing is written to the terminal.

    Records logged before the App is attached (start-up) are kept and posted
    when it is, so the Log pane shows them too.
    """

    def __init__(self, level: int = logging.INFO) -> None:
        super().__init__(level)
        add_filters(self, detail=False)
        self.setFormatter(logging.Formatter())
        self._bridge: Bridge | None = None
        self._early: deque[LogLine] = deque(maxlen=EARLY_LINES)
        self._attach_lock = threading.Lock()

    def attach(self, bridge: Bridge | None) -> None:
        with self._attach_lock:
            self._bridge = bridge
            early, self._early = list(self._early), deque(maxlen=EARLY_LINES)
        if bridge is not None:
            for line in early:
                bridge.post(line)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = record_text(self.formatter, record)  # type: ignore[arg-type]
            line = LogLine(
                from_timestamp(record.created),
                record.levelname,
                record.name,
                text,
            )
            with self._attach_lock:
                bridge = self._bridge
                if bridge is None:
                    self._early.append(line)
                    return
            bridge.post(line)
        except Exception:  # noqa: BLE001 - logging must never raise into the code that logged
            self.handleError(record)

    def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802 - logging's name
        pass  # the default prints to stderr, which would scribble over the screen
