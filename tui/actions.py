"""The console's actions in one table: the key bindings, the help screen and the command palette all read it."""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING

from textual.binding import Binding, BindingType
from textual.command import DiscoveryHit, Hit, Hits, Provider

if TYPE_CHECKING:
    from textual.app import App


@dataclass(frozen=True)
class ConsoleAction:
    key: str  # Textual key name
    display: str  # what the footer and help show
    action: str
    label: str  # short, for the footer
    title: str  # for the command palette and help
    help: str
    footer: bool = True  # shown in the footer; the rest are in help (?) and the palette


ACTIONS: tuple[ConsoleAction, ...] = (
    ConsoleAction(
        "f", "f", "force_sync", "Force", "Force sync", "Read every document now, compare, and find deletions"
    ),
    ConsoleAction("s", "s", "sync_now", "Sync", "Sync now", "Run a normal sync now (only what changed, when it can)"),
    ConsoleAction(
        "i", "i", "edit_interval", "Interval", "Set the sync interval", "Seconds between scheduled syncs, 10 to 86,400"
    ),
    ConsoleAction("p", "p", "pause", "Pause", "Pause scheduled syncs", "f and s still sync at once while paused"),
    ConsoleAction("p", "p", "resume", "Resume", "Resume scheduled syncs", "Scheduled syncs start again"),
    ConsoleAction(
        "slash", "/", "filter", "Filter", "Filter recent changes", "Show only changes whose document id or name matches"
    ),
    ConsoleAction("r", "r", "rejects", "Rejects", "Show rejects", "Documents that failed validation, with the reason"),
    ConsoleAction(
        "e",
        "e",
        "sync_ids",
        "Employees",
        "Sync selected employees",
        "Read and sync the documents you name, now",
        footer=False,
    ),
    ConsoleAction(
        "h",
        "h",
        "history",
        "History",
        "Run history",
        "Every run with its counts and reads; Enter: changes, u: roll back",
        footer=False,
    ),
    ConsoleAction("question_mark", "?", "help", "Help", "Help", "Keys and what they do"),
    ConsoleAction("q", "q", "quit", "Quit", "Quit", "Stop the service cleanly, release the sync lock, and exit"),
)

# Keys that are not actions of their own but that an operator needs to know.
OTHER_KEYS: tuple[tuple[str, str], ...] = (
    ("Tab / Shift+Tab", "move between Recent changes and Log"),
    ("↑ ↓ PgUp PgDn", "scroll the focused pane; Home/End jump; the Log stops following while scrolled up"),
    ("← →", "scroll sideways for long lines"),
    ("Esc", "close a dialog or screen; on the main screen, clear the filter"),
    ("Ctrl+P", "command palette: every action above, by name"),
)


def bindings() -> list[BindingType]:
    out: list[BindingType] = [Binding(a.key, a.action, a.label, key_display=a.display, show=a.footer) for a in ACTIONS]
    out.append(Binding("escape", "clear_filter", "Clear filter", show=False))
    return out


class ConsoleCommands(Provider):
    """The command palette's entries for the console's actions (those allowed right now)."""

    def _commands(self) -> list[tuple[str, str, str]]:
        app: App = self.app
        return [(a.title, a.help, a.action) for a in ACTIONS if app.check_action(a.action, ()) is not False]

    async def discover(self) -> Hits:
        for title, help_text, action in self._commands():
            yield DiscoveryHit(title, partial(self.app.run_action, action), help=help_text)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for title, help_text, action in self._commands():
            score = matcher.match(title)
            if score > 0:
                yield Hit(score, matcher.highlight(title), partial(self.app.run_action, action), help=help_text)
