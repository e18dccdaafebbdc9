"""The rejects screen: documents that failed validation, with the reason, read from the database."""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Static

from .. import format as fmt


class RejectsScreen(Screen[None]):
    """Opened with r; the App's worker fills it via ``show``."""

    BINDINGS = [
        Binding("escape", "close", "Back"),
        Binding("r", "close", "Back", show=False),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[dict[str, Any]] = []
        self.summary = "Loading rejects…"

    def compose(self) -> ComposeResult:
        yield Header(show_clock=False)
        yield Static("Loading rejects…", id="rejects-summary")
        yield DataTable(id="rejects-table", cursor_type="row", zebra_stripes=True)
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        table.border_title = "Rejects"
        table.add_column("Document", key="document", width=24)
        table.add_column("Field", key="field", width=16)
        table.add_column("Rejected at", key="at", width=23)
        table.add_column("Reason", key="reason")

    def show(self, rows: list[dict[str, Any]], error: str = "") -> None:
        self.rows = rows
        table = self.query_one(DataTable)
        table.clear()
        if error:
            self._summary(Text(f"Could not read the rejects: {error}", style="red"))
            return
        for row in rows:
            table.add_row(
                Text(fmt.clip(row.get("document_id"), 24)),
                Text(fmt.clip(row.get("field"), 16)),
                Text(fmt.absolute(fmt.parse_time(row.get("rejected_at")))),
                Text(fmt.clip(row.get("reason"), 200)),
            )
        if rows:
            self._summary(
                Text(
                    f"{len(rows):,} document(s) not written because they broke a field rule. "
                    "A later valid version clears a reject. Esc goes back."
                )
            )
        else:
            self._summary(Text("No open rejects: every document passed validation. Esc goes back.", style="green"))

    def _summary(self, text: Text) -> None:
        self.summary = text.plain
        self.query_one("#rejects-summary", Static).update(text)

    def action_close(self) -> None:
        self.dismiss(None)
