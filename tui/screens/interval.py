"""The interval dialog: a whole number of seconds from 10 to 86,400, checked as you type."""

from __future__ import annotations

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.widgets import Input, Label, Static

from core.config import INTERVAL_MAX, INTERVAL_MIN

from .dialog import FieldDialog


def interval_error(value: str) -> str | None:
    """Why ``value`` is not an acceptable interval, or None when it is."""
    value = value.strip()
    if not value:
        return "Type a number of seconds"
    try:
        seconds = int(value)
    except ValueError:
        return "Whole seconds only"
    if seconds < INTERVAL_MIN:
        return f"At least {INTERVAL_MIN} seconds"
    if seconds > INTERVAL_MAX:
        return f"At most {INTERVAL_MAX:,} seconds (one day)"
    return None


class IntervalScreen(FieldDialog[int | None]):
    """Dismisses with the new interval, or None when cancelled."""

    BINDINGS = [Binding("escape", "cancel", "Cancel")]
    FIELD = "#seconds"

    def __init__(self, current: int | None) -> None:
        super().__init__()
        self.current = current
        self.problem = ""  # the error shown under the field, if any

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Label("Sync interval", classes="dialog-title")
            now = f"now {self.current:,} s; " if self.current else ""
            yield Static(
                f"Seconds between scheduled syncs ({now}{INTERVAL_MIN} to {INTERVAL_MAX:,}).", classes="dialog-text"
            )
            yield Input(placeholder=str(self.current or 300), type="integer", id="seconds")
            yield Static("", id="interval-error", classes="dialog-error")
            yield Static("Enter saves · Esc cancels", classes="dialog-keys")

    def _show(self, problem: str | None) -> None:
        self.problem = problem or ""
        self.query_one("#interval-error", Static).update(self.problem)
        self.query_one("#seconds", Input).set_class(bool(problem), "-invalid")

    @on(Input.Changed, "#seconds")
    def _changed(self, event: Input.Changed) -> None:
        self._show(interval_error(event.value) if event.value else None)

    @on(Input.Submitted, "#seconds")
    def _submitted(self, event: Input.Submitted) -> None:
        event.stop()
        problem = interval_error(event.value)
        if problem:
            self._show(problem)
            self.app.bell()
            return
        self.dismiss(int(event.value.strip()))

    def action_cancel(self) -> None:
        self.dismiss(None)
