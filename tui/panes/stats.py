"""The Stats pane: totals, Firestore reads against a naive full read, and recent run durations."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widgets import Sparkline, Static

from .. import format as fmt

LABEL = "dim"


class StatsPane(Vertical):
    DEFAULT_CSS = """
    StatsPane { height: auto; }
    StatsPane #stats-text { height: auto; }
    StatsPane #durations-row { height: 1; }
    StatsPane #last-duration { width: auto; padding-right: 1; }
    StatsPane Sparkline { width: 1fr; height: 1; }
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.border_title = "Stats"
        self.text = ""
        self._grid: Text | None = None
        self._last: Text | None = None

    def compose(self) -> ComposeResult:
        yield Static(id="stats-text")
        with Horizontal(id="durations-row"):
            yield Static("Last —", id="last-duration")
            yield Sparkline([], summary_function=max, id="durations")

    def show(self, stats: Mapping[str, Any], snap: Mapping[str, Any]) -> None:
        rows, saved = stat_rows(stats, snap)
        grid = columns(rows)
        if grid != self._grid:  # drawn only when a figure changed (see columns)
            self._grid = grid
            self.query_one("#stats-text", Static).update(grid)
        self.border_subtitle = saved
        last = Text("Last ", style=LABEL)
        last.append(fmt.duration_ms(stats.get("last_duration_ms")))
        if last != self._last:
            self._last = last
            self.query_one("#last-duration", Static).update(last)
        durations = [float(d) for d in (stats.get("recent_durations_ms") or []) if d is not None]
        if len(durations) < 2:
            durations = []  # one bar across the whole width says nothing
        sparkline = self.query_one(Sparkline)
        if list(sparkline.data or []) != durations:
            sparkline.data = durations
        lines = [" ".join(str(cell) for cell in row) for row in rows]
        self.text = "\n".join([*lines, last.plain, saved])


def columns(rows: list[tuple[str, Text, str, Text]]) -> Text:
    """Label, figure, label, figure: labels dim and left, figures right, one space between.

    As one ``Text``: a rich ``Table`` cost the event loop ten times as much to
    measure and draw, at each update during a run.
    """
    halves = [[row[:2] for row in rows], [row[2:] for row in rows]]
    label_widths = [max((len(label) for label, _ in half), default=0) for half in halves]
    figure_widths = [max((figure.cell_len for _, figure in half), default=0) for half in halves]
    out = Text(no_wrap=True)
    for i, row in enumerate(rows):
        if i:
            out.append("\n")
        for half, (label, figure) in enumerate((row[:2], row[2:])):
            if half:
                out.append(" ")
            out.append(label.ljust(label_widths[half]), style=LABEL)
            out.append(" " * (figure_widths[half] - figure.cell_len + 1))
            out.append_text(figure)
    return out


def stat_rows(stats: Mapping[str, Any], snap: Mapping[str, Any]) -> tuple[list[tuple[str, Text, str, Text]], str]:
    """The grid's rows, and a line on what incremental reads saved (for the border)."""

    def n(key: str, style: str = "") -> Text:
        value = stats.get(key)
        return Text(fmt.compact(value), style=style if value else "")

    by_status = stats.get("runs_by_status") or {}
    failed = int(by_status.get("failed") or 0) + int(by_status.get("interrupted") or 0)
    rows = [
        ("Runs", n("runs"), "Failed", Text(fmt.compact(failed), style="red" if failed else "")),
        ("Inserted", n("inserted"), "Updated", n("updated")),
        ("Deleted", n("deleted"), "Unchanged", n("unchanged")),
        ("Rejects", n("rejects_open", "yellow"), "Rows", Text(fmt.compact(stats.get("rows", snap.get("rows"))))),
        ("Reads", n("firestore_reads"), "Naive", n("naive_reads")),
    ]
    return rows, reads_saved(stats.get("reads_saved_pct"))


def reads_saved(pct: float | None) -> str:
    """The border's line: incremental reads against a full read every run (the naive cost)."""
    if pct is None:
        return ""
    # Early on, the first full read plus listen re-reads can cost more than the naive count.
    return f"{pct:g}% fewer reads" if pct >= 0 else f"{-pct:g}% more reads than naive"
