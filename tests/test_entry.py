"""The console is handed to core's command line from outside: core/ itself opens no screen."""

from __future__ import annotations

import pytest

import tui.entry
from core import cli
from core.config import Config


@pytest.fixture
def config_path(tmp_path):
    path = tmp_path / "sync.toml"
    path.write_text('[target]\nurl = "sqlite:///x.db"\n\n[fields.name]\n')
    return str(path)


def test_the_console_runs_what_the_entry_point_hands_in(config_path):
    opened: list[tuple[Config, bool]] = []

    def console(config: Config, *, attach: bool = False) -> int:
        opened.append((config, attach))
        return 7

    faces = cli.Faces(console=console)
    assert cli.main(["--config", config_path], faces=faces) == 7
    assert cli.main(["--attach", "--config", config_path], faces=faces) == 7
    assert [attach for _, attach in opened] == [False, True]
    assert opened[0][0].target.url == "sqlite:///x.db"


def test_without_a_console_the_command_line_says_where_it_is(config_path, capsys):
    assert cli.main(["--config", config_path]) == cli.EXIT_USAGE
    err = capsys.readouterr().err
    assert "this entry point has no console" in err and "empsync --no-ui" in err
    assert cli.main(["web", "--config", config_path]) == cli.EXIT_USAGE
    assert "no browser console" in capsys.readouterr().err


def test_the_empsync_script_hands_in_the_console_and_the_browser_console():
    assert tui.entry.FACES.console is tui.entry.run_console
    assert tui.entry.FACES.web is tui.entry.run_web
