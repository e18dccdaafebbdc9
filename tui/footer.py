"""Textual's Footer, without the keys it leaks each time it is rebuilt."""

from __future__ import annotations

from textual import widgets


class Footer(widgets.Footer):
    """The footer rebuilds its keys on every change of bindings: a screen pushed or popped, a focus
    change, ``refresh_bindings()`` after each run. Each old key stays referenced from the footer's
    ``compact`` watchers (``data_bind``), which Textual prunes of closed widgets only when
    ``compact`` changes, so a console left running grew with every rebuild, and every
    full garbage collection (a pause of the whole process, keys included) grew with them.
    Mutating ``compact`` after a rebuild prunes the watchers of the keys that were removed.
    """

    async def recompose(self) -> None:
        await super().recompose()
        if self.is_attached:
            self.mutate_reactive(widgets.Footer.compact)
