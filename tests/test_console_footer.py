"""The console's footer: rebuilding it leaves nothing behind. A fast test against a stand-in face, no servers."""

from __future__ import annotations

import gc

from textual.widgets._footer import FooterKey

from tui.screens.help import HelpScreen

from .test_tui import fixed_console, until


def _detached_footer_keys() -> int:
    gc.collect()
    return sum(isinstance(o, FooterKey) and not o.is_attached for o in gc.get_objects())


async def test_opening_and_closing_screens_does_not_grow_the_heap_by_old_footer_keys():
    app = fixed_console()
    async with app.run_test(size=(140, 40)) as pilot:

        async def help_open_and_closed() -> None:
            await pilot.press("question_mark")
            await until(pilot, lambda: isinstance(app.screen, HelpScreen), "the help screen")
            await pilot.press("escape")
            await until(pilot, lambda: not isinstance(app.screen, HelpScreen), "the main screen again")
            await pilot.pause()

        for _ in range(2):
            await help_open_and_closed()
        before = _detached_footer_keys()
        for _ in range(4):  # each rebuilds the footer twice; the old keys used to stay referenced
            await help_open_and_closed()
        assert _detached_footer_keys() <= before
