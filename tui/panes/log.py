"""The Log pane: the tail of the service's log, bounded, levels coloured.

A line-based ScrollView (after Toolong): only the visible lines are rendered,
so a burst costs a list append, not a re-layout. It follows the tail while the
view is at the bottom; once the operator scrolls up, the lines they are reading
stay put, even as old lines fall off the top of the bounded buffer.
"""

from __future__ import annotations

from collections import deque
from datetime import datetime
from typing import Any

from rich.segment import Segment
from rich.text import Text
from textual.geometry import Size
from textual.scroll_view import ScrollView
from textual.strip import Strip

from core.safe import terminal_safe

from .. import format as fmt

MAX_LINES = 2000

LEVELS: dict[str, tuple[str, str]] = {
    "DEBUG": ("DEBUG", "dim"),
    "INFO": ("INFO ", "green"),
    "WARNING": ("WARN ", "bold yellow"),
    "ERROR": ("ERROR", "bold red"),
    "CRITICAL": ("CRIT ", "bold white on red"),
}


def log_text(at: datetime | None, level: str, message: str, source: str = "") -> list[Text]:
    """One record as one or more lines (a traceback is several); ``source``: another process's line."""
    label, style = LEVELS.get(level.upper(), (level[:5].ljust(5), ""))
    body_style = "red" if level.upper() in ("ERROR", "CRITICAL") else ("yellow" if level.upper() == "WARNING" else "")
    lines = message.splitlines() or [""]
    out = []
    for n, line in enumerate(lines):
        text = Text(no_wrap=True, end="")
        text.append(fmt.clock_time(at) if n == 0 else " " * 8, style="dim")
        text.append(" ")
        text.append(label if n == 0 else " " * 5, style=style)
        text.append(" ")
        if source and n == 0:
            text.append(f"{fmt.clip(source, 32)} ", style="dim magenta")
        text.append(terminal_safe(line.expandtabs(4)), style=body_style)
        out.append(text)
    return out


class LogView(ScrollView, can_focus=True):
    DEFAULT_CSS = """
    LogView { overflow: auto auto; scrollbar-size-horizontal: 0; }
    """

    def __init__(self, max_lines: int = MAX_LINES, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.border_title = "Log"
        self.lines: deque[Text] = deque(maxlen=max_lines)
        self._width = 0

    @property
    def following(self) -> bool:
        """Whether new lines scroll into view (the view is at the bottom)."""
        return self.scroll_y >= self.max_scroll_y

    def add(self, lines: list[Text]) -> None:
        if not lines:
            return
        follow = self.following
        before = len(self.lines)
        self.lines.extend(lines)
        fallen = before + len(lines) - len(self.lines)  # dropped off the top of the bounded buffer
        self._width = max(self._width, max(line.cell_len for line in lines))
        self.virtual_size = Size(self._width, len(self.lines))
        if follow:
            self.scroll_end(animate=False, immediate=True, x_axis=False, force=True)
        elif fallen:
            self.scroll_to(y=max(0, self.scroll_y - fallen), animate=False, immediate=True, force=True)
        self.refresh()

    def text_lines(self) -> list[str]:
        return [line.plain for line in self.lines]

    def visible_text(self) -> list[str]:
        top = int(self.scroll_y)
        return [line.plain for line in list(self.lines)[top : top + self.scrollable_content_region.height]]

    def render_line(self, y: int) -> Strip:
        scroll_x, scroll_y = self.scroll_offset
        index = scroll_y + y
        width = self.scrollable_content_region.width
        base = self.rich_style
        if index >= len(self.lines):
            return Strip.blank(width, base)
        text = self.lines[index]
        segments = list(text.render(self.app.console, end=""))
        strip = Strip(Segment.apply_style(segments, base), text.cell_len)
        return strip.crop_extend(scroll_x, scroll_x + width, base)
