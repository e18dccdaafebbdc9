"""The help screen: every key, from the same table as the bindings and the command palette."""

from __future__ import annotations

from rich.table import Table
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Label, Static

from ..actions import ACTIONS, OTHER_KEYS


def help_table() -> Table:
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold", no_wrap=True)
    table.add_column()
    seen: set[str] = set()
    for action in ACTIONS:
        if action.display in seen:  # p is pause and resume
            continue
        seen.add(action.display)
        title = "Pause / resume scheduled syncs" if action.key == "p" else action.title
        help_text = "f and s still sync at once while paused" if action.key == "p" else action.help
        table.add_row(action.display, f"{title} — {help_text}")
    table.add_row("", "")
    for key, text in OTHER_KEYS:
        table.add_row(key, text)
    return table


class HelpScreen(ModalScreen[None]):
    BINDINGS = [
        Binding("escape", "close", "Close"),
        Binding("question_mark", "close", "Close", key_display="?"),
        Binding("q", "close", "Close", show=False),
    ]

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="dialog", classes="help"):
            yield Label("empsync console — keys", classes="dialog-title")
            yield Static(help_table(), id="help-keys")
            yield Static("Esc or ? closes", classes="dialog-keys")

    def action_close(self) -> None:
        self.dismiss(None)
