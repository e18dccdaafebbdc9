"""The "sync these employees" dialog: document ids, comma-separated, checked as you type."""

from __future__ import annotations

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.widgets import Input, Label, Static

from core.config import check_document_ids
from core.errors import ConfigError

from .dialog import FieldDialog

MAX_IDS = 500  # as the API takes; a longer list is empsync sync --ids-from's job


def parse_ids(text: str) -> tuple[list[str], str | None]:
    """The ids typed (commas between them, spaces around them dropped), and why not, if not."""
    parts = [p.strip() for p in text.split(",")]
    parts = [p for p in parts if p]
    if not parts:
        return [], "Type one or more document ids, separated by commas"
    if len(parts) > MAX_IDS:
        return [], f"At most {MAX_IDS} ids here; `empsync sync --ids-from FILE` takes more"
    try:
        return check_document_ids("ids", parts), None
    except ConfigError as exc:
        return [], exc.problem


class IdsScreen(FieldDialog[tuple[str, ...] | None]):
    """Dismisses with the ids to sync, or None when cancelled."""

    BINDINGS = [Binding("escape", "cancel", "Cancel")]
    FIELD = "#ids"

    def __init__(self) -> None:
        super().__init__()
        self.problem = ""

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Label("Sync selected employees", classes="dialog-title")
            yield Static(
                "Document ids, separated by commas: each is read once and synced now "
                "(an id with a comma or edge spaces: empsync sync --ids-from).",
                classes="dialog-text",
            )
            yield Input(placeholder="e.g. emp-00042, emp-00117", id="ids")
            yield Static("", id="ids-error", classes="dialog-error")
            yield Static("Enter syncs · Esc cancels", classes="dialog-keys")

    def _show(self, problem: str | None) -> None:
        self.problem = problem or ""
        self.query_one("#ids-error", Static).update(self.problem)
        self.query_one("#ids", Input).set_class(bool(problem), "-invalid")

    @on(Input.Changed, "#ids")
    def _changed(self, event: Input.Changed) -> None:
        self._show(parse_ids(event.value)[1] if event.value.strip() else None)

    @on(Input.Submitted, "#ids")
    def _submitted(self, event: Input.Submitted) -> None:
        event.stop()
        ids, problem = parse_ids(event.value)
        if problem:
            self._show(problem)
            self.app.bell()
            return
        self.dismiss(tuple(ids))

    def action_cancel(self) -> None:
        self.dismiss(None)
