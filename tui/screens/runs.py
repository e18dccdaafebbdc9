"""The run history (h): every run with its counts, reads and result; Enter shows its changes, u rolls it back.

The rows come from the database (``service.runs()``) on a thread worker, and
again every few seconds while the screen is open; the hourly figures above
the table are the service's stats, which it refreshes once a minute.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol, cast

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Label, Sparkline, Static

from core.errors import EmpsyncError
from core.face import SyncFace, Ticket
from core.safe import terminal_safe

from .. import format as fmt
from .confirm import ConfirmScreen

REFRESH_S = 5.0
COUNTS = ("fetched", "inserted", "updated", "deleted", "repaired", "rejected")
# The hourly figures charted above the table: stats key -> title.
CHARTS = {"runs": "Runs/h", "reads": "Reads/h", "duration_p95_ms": "p95 ms"}


class _Console(Protocol):
    """What these screens use of the console's App (tui/app.py, which imports them)."""

    @property
    def service(self) -> SyncFace: ...

    def toast(self, message: str, *, severity: str = ..., title: str = ..., timeout: float = ...) -> None: ...

    def toast_queued(self, what: str, ticket: Ticket) -> None: ...


def _console(screen: Screen[None]) -> _Console:
    return cast(_Console, screen.app)  # Textual types it as any App; these screens run in the console only


class RunsLoaded(Message):
    def __init__(self, rows: Sequence[Mapping[str, Any]] | None, error: str = "") -> None:
        super().__init__()
        self.rows, self.error = rows, error


class PlanReady(Message):
    """A dry rollback of one run: what it would put back, or why it cannot."""

    def __init__(self, run: int, result: Any) -> None:
        super().__init__()
        self.run, self.result = run, result


class RunsScreen(Screen[None]):
    BINDINGS = [
        Binding("escape", "close", "Back"),
        Binding("h", "close", "Back", show=False),
        Binding("u", "rollback", "Roll back"),
        Binding("enter", "changes", "Changes", show=False),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.rows: Sequence[Mapping[str, Any]] = []  # the runs as JSON (RunRow)
        self.summary = "Loading the run history…"

    def compose(self) -> ComposeResult:
        yield Header(show_clock=False)
        yield Static(self.summary, id="runs-summary")
        with Horizontal(id="runs-charts"):
            for key, title in CHARTS.items():
                with Vertical(classes="runs-chart"):
                    yield Label(title, id=f"chart-{key}-label")
                    yield Sparkline([], id=f"chart-{key}")
        yield DataTable(id="runs-table", cursor_type="row", zebra_stripes=True)
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        table.border_title = "Runs (newest first) · Enter: its changes · u: roll it back"
        for key, label, width in (
            ("id", "Run", 6), ("kind", "Kind", 8), ("status", "Status", 11), ("started", "Started (UTC)", 19),
            ("took", "Took", 7), ("trigger", "Trigger", 9), *((c, c.capitalize(), 8) for c in COUNTS),
            ("reads", "Reads/naive", 13), ("message", "Error", None),
        ):  # fmt: skip
            table.add_column(label, key=key, width=width)
        self._charts()
        self._load()
        self.set_interval(REFRESH_S, self._load)

    def _charts(self) -> None:
        hourly = self._hourly()
        for key, title in CHARTS.items():
            values = [float(b.get(key) or 0) for b in hourly]
            self.query_one(f"#chart-{key}", Sparkline).data = values or [0.0]
            peak = max(values, default=0)
            self.query_one(f"#chart-{key}-label", Label).update(f"{title} · 48 h · peak {peak:,.0f}")

    def _hourly(self) -> Sequence[Mapping[str, Any]]:
        try:
            return list(_console(self).service.stats().get("hourly") or [])
        except Exception:  # noqa: BLE001 - a stand-in service without stats: no charts
            return []

    @work(thread=True, exclusive=True, group="runs", exit_on_error=False)
    def _load(self) -> None:
        try:
            self.post_message(RunsLoaded(_console(self).service.runs(200)))
        except (EmpsyncError, AttributeError) as exc:
            self.post_message(RunsLoaded(None, getattr(exc, "message", "this console has no run history")))

    @on(RunsLoaded)
    def _loaded(self, message: RunsLoaded) -> None:
        if message.rows is None:
            self._summary(Text(f"Could not read the runs: {terminal_safe(message.error)}", style="red"))
            return
        self.rows = message.rows
        table = self.query_one(DataTable)
        cursor = table.cursor_row
        table.clear()
        for row in self.rows:
            took = "—" if row.get("duration_ms") is None else f"{row['duration_ms'] / 1000:.1f} s"
            status = row.get("status") or ""
            table.add_row(
                Text(f"#{row['id']}"),
                Text(str(row.get("kind"))),
                Text(status, style="red" if status == "failed" else "yellow" if status == "interrupted" else ""),
                Text(str(row.get("started_at") or "").replace("T", " ").rstrip("Z")),
                Text(took),
                Text(fmt.clip(row.get("trigger"), 9)),
                *(Text(f"{row.get(c) or 0:,}") for c in COUNTS),
                Text(f"{row.get('firestore_reads') or 0:,}/{row.get('naive_reads') or 0:,}"),
                Text(fmt.clip(row.get("message") if status != "ok" else "", 200)),
                key=str(row["id"]),
            )
        if self.rows:
            table.move_cursor(row=min(cursor, len(self.rows) - 1))
        self._charts()
        self._summary(Text(f"{len(self.rows):,} runs · Esc goes back"))

    def _selected(self) -> Mapping[str, Any] | None:
        table = self.query_one(DataTable)
        if not self.rows or table.cursor_row >= len(self.rows):
            return None
        return self.rows[table.cursor_row]

    @on(DataTable.RowSelected, "#runs-table")
    def _row_selected(self, event: DataTable.RowSelected) -> None:
        self.action_changes()

    def action_changes(self) -> None:
        row = self._selected()
        if row is not None:
            self.app.push_screen(RunChangesScreen(int(row["id"])))

    def action_rollback(self) -> None:
        row = self._selected()
        if row is not None:
            self._summary(Text(f"Working out what rolling back run #{row['id']} would put back…"))
            self._plan(int(row["id"]))

    @work(thread=True, exclusive=True, group="plan", exit_on_error=False)
    def _plan(self, run: int) -> None:
        try:
            self.post_message(PlanReady(run, _console(self).service.plan_rollback(run)))
        except (EmpsyncError, AttributeError) as exc:
            self.post_message(PlanReady(run, getattr(exc, "message", "this console cannot roll back")))

    @on(PlanReady)
    def _plan_ready(self, message: PlanReady) -> None:
        result = message.result
        if isinstance(result, str) or result.status != "ok":
            why = result if isinstance(result, str) else result.reason + (f"\n{result.hint}" if result.hint else "")
            _console(self).toast(why, severity="error", title=f"Run #{message.run} cannot be rolled back")
            self._summary(Text(f"Run #{message.run} cannot be rolled back", style="red"))
            return
        n = len(result.would_change)
        if not n:
            _console(self).toast(f"Run #{message.run} changed nothing that is still there to put back.")
            return
        runs = ", ".join(f"#{r}" for r in result.rolled_back)
        text = (
            f"Put back {n:,} row(s) as they were before run(s) {runs}: {result.counts.updated} updated, "
            f"{result.counts.inserted} re-inserted, {result.counts.deleted} removed, {result.counts.restored} "
            "restored.\nScheduled syncs are then paused until you fix the documents in Firestore and resume (p)."
        )
        self.app.push_screen(
            ConfirmScreen(f"Roll back run #{message.run}?", text), lambda yes: self._confirmed(message.run, yes)
        )

    def _confirmed(self, run: int, yes: bool | None) -> None:
        if not yes:
            self._summary(Text("Nothing rolled back."))
            return
        try:
            ticket = _console(self).service.rollback(run, trigger="console")
        except EmpsyncError as exc:
            _console(self).toast(exc.message, severity="error")
            return
        _console(self).toast_queued(f"Rollback of run #{run}", ticket)
        self._load()

    def _summary(self, text: Text) -> None:
        self.summary = text.plain
        self.query_one("#runs-summary", Static).update(text)

    def action_close(self) -> None:
        self.dismiss(None)


class ChangesLoaded(Message):
    def __init__(self, rows: list[dict[str, Any]] | None, error: str = "") -> None:
        super().__init__()
        self.rows, self.error = rows, error


class RunChangesScreen(Screen[None]):
    """One run's field-level changes, in the order it made them."""

    BINDINGS = [Binding("escape", "close", "Back")]

    def __init__(self, run: int) -> None:
        super().__init__()
        self.run = run
        self.rows: list[dict[str, Any]] = []

    def compose(self) -> ComposeResult:
        yield Header(show_clock=False)
        yield Static(f"Changes of run #{self.run}…", id="run-changes-summary")
        yield DataTable(id="run-changes-table", cursor_type="row", zebra_stripes=True)
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        table.border_title = f"Run #{self.run}"
        for key, label, width in (
            ("at", "Time (UTC)", 19), ("document", "Document", 22), ("op", "Op", 8), ("field", "Field", 14),
            ("old", "Old", 24), ("new", "New", None),
        ):  # fmt: skip
            table.add_column(label, key=key, width=width)
        self._load()

    @work(thread=True, exclusive=True, group="run-changes", exit_on_error=False)
    def _load(self) -> None:
        try:
            self.post_message(ChangesLoaded(_console(self).service.run_changes(self.run)))
        except (EmpsyncError, AttributeError) as exc:
            self.post_message(ChangesLoaded(None, getattr(exc, "message", "no history to read")))

    @on(ChangesLoaded)
    def _loaded(self, message: ChangesLoaded) -> None:
        summary = self.query_one("#run-changes-summary", Static)
        if message.rows is None:
            summary.update(Text(f"Could not read the changes: {terminal_safe(message.error)}", style="red"))
            return
        self.rows = message.rows
        table = self.query_one(DataTable)
        for n, row in enumerate(self.rows):
            at = fmt.parse_time(row.get("changed_at"))
            table.add_row(
                Text(at.strftime("%Y-%m-%d %H:%M:%S") if at else "—"),
                Text(fmt.clip(row.get("document_id"), 22)),
                Text(str(row.get("operation"))),
                Text(fmt.clip(row.get("field"), 14)),
                Text(fmt.clip(row.get("old_value"), 24)),
                Text(fmt.clip(row.get("new_value"), 200)),
                key=str(n),
            )
        shown = f"{len(self.rows):,} change(s)" + (" (the first 1,000)" if len(self.rows) >= 1000 else "")
        summary.update(Text(f"{shown} of run #{self.run} · Esc goes back"))

    def action_close(self) -> None:
        self.dismiss(None)
