"""The filter dialog: show only recent changes whose document id or name contains the text."""

from __future__ import annotations

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.widgets import Input, Label, Static

from .dialog import FieldDialog


class FilterScreen(FieldDialog[str | None]):
    """Dismisses with the text (empty clears the filter), or None when cancelled."""

    BINDINGS = [Binding("escape", "cancel", "Cancel")]
    FIELD = "#needle"

    def __init__(self, current: str = "") -> None:
        super().__init__()
        self.current = current

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Label("Filter recent changes", classes="dialog-title")
            yield Static("Document id or employee name contains (any case).", classes="dialog-text")
            placeholder = f"now “{self.current}”" if self.current else "e.g. e42 or Silva"
            yield Input(placeholder=placeholder, id="needle")
            yield Static("Enter applies · empty Enter clears · Esc cancels", classes="dialog-keys")

    @on(Input.Submitted, "#needle")
    def _submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.dismiss(event.value.strip())

    def action_cancel(self) -> None:
        self.dismiss(None)
