"""The duplicate check itself: it must flag every replay and nothing that is a true history."""

from __future__ import annotations

from .checks import check_history, slope


def history(*rows: tuple) -> list[tuple]:
    """(document, operation, field, old, new) rows, numbered in commit order, one run each."""
    return [(n, n, *row) for n, row in enumerate(rows, 1)]


def test_a_true_history_has_no_replay_even_with_identical_rows():
    report = check_history(
        history(
            ("e1", "insert", None, None, None),
            ("e1", "update", "salary", "1", "2"),
            ("e1", "update", "salary", "2", "1"),
            ("e1", "update", "salary", "1", "2"),  # the same change again, but true: the value went back
            ("e1", "update", "city", "Lisbon", "Porto"),
            ("e1", "delete", None, None, None),
            ("e1", "restore", None, None, None),
            ("e1", "update", "salary", "2", "3"),
            ("e2", "insert", None, None, None),
        )
    )
    assert report.replays == []
    assert report.repeats == [("e1", "update", "salary", "1", "2")]
    assert report.documents == 2 and report.operations == {"insert": 2, "update": 5, "delete": 1, "restore": 1}


def test_every_kind_of_replay_is_flagged():
    report = check_history(
        history(
            ("e1", "insert", None, None, None),
            ("e1", "insert", None, None, None),  # inserted twice
            ("e2", "insert", None, None, None),
            ("e2", "update", "salary", "1", "2"),
            ("e2", "update", "salary", "1", "2"),  # the change applied twice
            ("e3", "update", "salary", "1", "2"),  # an update of a row never inserted
            ("e4", "insert", None, None, None),
            ("e4", "delete", None, None, None),
            ("e4", "delete", None, None, None),  # deleted twice
            ("e5", "insert", None, None, None),
            ("e5", "restore", None, None, None),  # restored while live
        )
    )
    flagged = [r.split(": ", 1)[1] for r in report.replays]
    assert len(report.replays) == 5, report.replays
    assert flagged[0].startswith("e1 insert") and "while the document is live" in flagged[0]
    assert flagged[1].startswith("e2 update salary") and "the field was '2' by then" in flagged[1]
    assert flagged[2].startswith("e3 update") and "absent" in flagged[2]
    assert flagged[3].startswith("e4 delete") and "deleted" in flagged[3]
    assert flagged[4].startswith("e5 restore") and "live" in flagged[4]


def test_hard_deletes_let_a_document_be_inserted_again():
    rows = history(
        ("e1", "insert", None, None, None),
        ("e1", "update", "salary", "1", "2"),
        ("e1", "delete", None, None, None),
        ("e1", "insert", None, None, None),
        ("e1", "update", "salary", "1", "5"),  # a fresh chain after the new insert
    )
    assert check_history(rows, hard_deletes=True).replays == []
    assert len(check_history(rows).replays) == 1  # in soft mode a re-created document is restored, not inserted


def test_slope():
    assert slope([(0, 1.0), (1, 3.0), (2, 5.0)]) == 2.0
    assert slope([(5, 1.0)]) == 0.0
