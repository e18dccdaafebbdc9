"""The console's footer: rebuilt only when its keys change, and a rebuild leaves nothing behind.

Fast tests against a stand-in face, no servers.
"""

from __future__ import annotations

import gc

from textual.widgets._footer import FooterKey

from tui.app import EmpsyncApp
from tui.footer import Footer
from tui.screens.help import HelpScreen

from .console_support import FakeService
from .test_tui import ready, until


def _detached_footer_keys() -> int:
    gc.collect()
    return sum(isinstance(o, FooterKey) and not o.is_attached for o in gc.get_objects())


def _keys(app) -> list[FooterKey]:
    return list(app.screen.query_one(Footer).query(FooterKey))


async def _until_shown(pilot, description: str) -> None:
    await until(pilot, lambda: any(k.description == description for k in _keys(pilot.app)), f"{description} shown")


async def _help_open_and_closed(pilot) -> None:
    app = pilot.app
    await pilot.press("question_mark")
    await until(pilot, lambda: isinstance(app.screen, HelpScreen), "the help screen")
    await pilot.press("escape")
    await until(pilot, lambda: not isinstance(app.screen, HelpScreen), "the main screen again")
    await pilot.pause()


async def test_the_footer_keeps_its_keys_when_a_screen_comes_and_goes_and_rebuilds_them_when_they_change():
    fake = FakeService()
    app = EmpsyncApp(fake)
    async with app.run_test(size=(140, 40)) as pilot:
        await ready(pilot, fake)
        before = _keys(app)
        await _help_open_and_closed(pilot)
        assert _keys(app) == before and all(a is b for a, b in zip(_keys(app), before, strict=True))

        await pilot.press("p")
        await _until_shown(pilot, "Resume")
        assert not any(k.description == "Pause" for k in _keys(app))
        await pilot.press("p")
        await _until_shown(pilot, "Pause")


async def test_rebuilding_the_footer_does_not_grow_the_heap_by_old_footer_keys():
    fake = FakeService()
    app = EmpsyncApp(fake)
    async with app.run_test(size=(140, 40)) as pilot:
        await ready(pilot, fake)

        async def paused_and_resumed() -> None:  # each rebuilds the footer twice
            for shown in ("Resume", "Pause"):
                await pilot.press("p")
                await _until_shown(pilot, shown)
            await _help_open_and_closed(pilot)

        for _ in range(2):
            await paused_and_resumed()
        before = _detached_footer_keys()
        for _ in range(4):  # the old keys used to stay referenced from the footer's watchers
            await paused_and_resumed()
        assert _detached_footer_keys() <= before
