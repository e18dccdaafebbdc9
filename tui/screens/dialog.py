"""A one-field dialog that never loses a keystroke typed before the field has focus."""

from __future__ import annotations

from typing import TypeVar

from textual import events
from textual.screen import ModalScreen
from textual.widgets import Input

T = TypeVar("T")


class FieldDialog(ModalScreen[T]):
    """``i`` then ``120`` typed fast (or pasted) must all land in the field.

    Keys read in the same burst as the one that opened the dialog were already
    sent to the main screen's focused widget, or to this screen before its
    field had focus; the App hands the first kind over (``type_ahead``), and
    ``on_key`` catches the second.
    """

    FIELD = "Input"

    def type_ahead(self, character: str) -> None:
        field = self.query_one(self.FIELD, Input)
        field.focus()
        field.insert_text_at_cursor(character)

    async def on_key(self, event: events.Key) -> None:
        # The Input stops every printable key it receives: one that arrives here was sent to the
        # screen while the field had no focus yet.
        field = self.query_one(self.FIELD, Input)
        if event.is_printable and event.character:
            event.stop()
            self.type_ahead(event.character)
        elif event.key == "enter" and not field.has_focus:
            event.stop()
            field.focus()
            await field.action_submit()
