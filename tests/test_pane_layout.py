"""How the Status and Stats panes lay out their rows as plain Text (pure, no server)."""

from __future__ import annotations

from rich.console import Console
from rich.text import Text

from tui.panes.stats import columns
from tui.panes.status import LABEL_WIDTH, labelled


def test_a_long_value_wraps_inside_its_column_under_the_label_it_belongs_to():
    lines = [("State", Text("IDLE")), ("To", Text("mysql+pymysql://empsync:***@db.internal:3306/hr"))]
    text = labelled(lines, 30, Console(width=30))
    assert text.plain.split("\n") == [
        "State IDLE",
        "To    mysql+pymysql://empsync:",
        "      ***@db.internal:3306/hr",
    ]
    assert all(len(line) <= 30 for line in text.plain.split("\n"))
    assert text.spans[0].style == "dim" and text.plain[text.spans[0].start : text.spans[0].end] == "State"


def test_with_no_width_yet_each_value_stays_on_its_row():
    text = labelled([("Last", Text("never")), ("Next", Text("in 02:46"))], 0, Console(width=80))
    assert text.plain == f"{'Last':<{LABEL_WIDTH}} never\n{'Next':<{LABEL_WIDTH}} in 02:46"


def test_figures_line_up_on_the_right_of_their_column():
    rows = [("Runs", Text("12"), "Failed", Text("0")), ("Inserted", Text("1.2k"), "Updated", Text("345"))]
    assert columns(rows).plain.split("\n") == [
        "Runs       12 Failed    0",
        "Inserted 1.2k Updated 345",
    ]
