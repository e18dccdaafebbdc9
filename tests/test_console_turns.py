"""The console claims the sync's turn for what a person does, and gives it back once the frame is drawn.

Fast tests against a stand-in face, no servers (the run's side: tests/test_turns.py).
"""

from __future__ import annotations

import inspect

from textual.app import App

from core.turns import Turns
from tui.app import EmpsyncApp
from tui.screens.help import HelpScreen

from .console_support import FakeService
from .test_tui import ready, until


class Recorded(Turns):
    def __init__(self) -> None:
        super().__init__(longest_s=60)
        self.calls: list[str] = []

    def claim(self) -> None:
        self.calls.append("claim")
        super().claim()

    def release(self) -> None:
        self.calls.append("release")
        super().release()


async def test_a_key_claims_a_turn_released_after_its_screen_is_drawn_and_a_mouse_move_claims_none():
    fake, turns = FakeService(), Recorded()
    app = EmpsyncApp(fake, turns=turns)
    async with app.run_test(size=(140, 40)) as pilot:
        await ready(pilot, fake)
        turns.calls.clear()
        await pilot.press("question_mark")
        await until(pilot, lambda: isinstance(app.screen, HelpScreen), "the help screen")
        await until(pilot, lambda: not turns.claimed, "the turn to be released")
        assert turns.calls[0] == "claim" and turns.calls[-1] == "release"
        await pilot.press("escape")
        await until(pilot, lambda: not isinstance(app.screen, HelpScreen), "the main screen again")
        await until(pilot, lambda: not turns.claimed, "the turn to be released")
        assert turns.calls.count("claim") == 2

        await pilot.hover("#status")
        await pilot.pause()
        assert turns.calls.count("claim") == 2, "a mouse move is no reason to hold the sync"
        await pilot.press("q")


def test_textual_still_shows_each_frame_through_the_method_that_ends_a_turn():
    """A turn ends in ``EmpsyncApp._display``, Textual's own; renamed, turns would end only at their time limit."""
    assert list(inspect.signature(App._display).parameters) == ["self", "screen", "renderable"]
