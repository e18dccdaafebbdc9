"""The Stats pane's words for what incremental reads saved (pure, no server)."""

from __future__ import annotations

import pytest

from tui.panes.stats import reads_saved


@pytest.mark.parametrize(
    ("pct", "line"),
    [
        (89.4, "89.4% fewer reads"),
        (0.0, "0% fewer reads"),
        (-7.0, "7% more reads than naive"),  # a new service: the first full read and listen re-reads
        (None, ""),
    ],
)
def test_the_border_line_reads_the_right_way_round(pct, line):
    assert reads_saved(pct) == line
