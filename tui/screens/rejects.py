"""The rejects screen: documents that failed validation, with the reason, read from the database."""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Static

from core.safe import terminal_safe

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
        yield Static("", id="reject-detail")
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        table.border_title = "Rejects"
        table.add_column("Document", key="document", width=20)
        table.add_column("Field", key="field", width=14)
        table.add_column("Rejected (UTC)", key="at", width=19)
        table.add_column("Reason", key="reason")

    def show(self, rows: list[dict[str, Any]], error: str = "") -> None:
        self.rows = rows
        table = self.query_one(DataTable)
        table.clear()
        if error:
            self._summary(Text(f"Could not read the rejects: {terminal_safe(error)}", style="red"))
            return
        for n, row in enumerate(rows):
            at = fmt.parse_time(row.get("rejected_at"))
            table.add_row(
                Text(fmt.clip(row.get("document_id"), 20)),
                Text(fmt.clip(row.get("field"), 14)),
                Text(at.strftime("%Y-%m-%d %H:%M:%S") if at else "—"),
                Text(fmt.clip(row.get("reason"), 200)),
                key=str(n),
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

    @on(DataTable.RowHighlighted, "#rejects-table")
    def _highlighted(self, event: DataTable.RowHighlighted) -> None:
        """The whole of the highlighted reject, since the table cuts long ids and reasons."""
        try:
            row = self.rows[int(event.row_key.value or 0)]
        except (IndexError, ValueError):
            return
        detail = Text()
        detail.append("Document ", style="dim")
        detail.append(terminal_safe(str(row.get("document_id"))))
        detail.append("\nReason   ", style="dim")
        detail.append(terminal_safe(str(row.get("reason"))))
        self.query_one("#reject-detail", Static).update(detail)

    def _summary(self, text: Text) -> None:
        self.summary = text.plain
        self.query_one("#rejects-summary", Static).update(text)

    def action_close(self) -> None:
        self.dismiss(None)
