"""Textual's Footer, rebuilt only when what it shows changes, and without the keys it leaked."""

from __future__ import annotations

from collections.abc import Hashable

from textual import widgets


class Footer(widgets.Footer):
    """Textual's footer rebuilds its keys on every change of bindings: a screen pushed or popped, a
    focus change, ``refresh_bindings()`` after each run. Most of these change nothing it shows (the
    main screen back on top after the help screen has the keys it had), and a rebuild was about a
    fifth of the event loop's work per key during a force run: new keys mounted, styled and bound
    to ``compact``. So the footer is rebuilt only when the keys it would show differ.

    A rebuild leaves each old key referenced from the footer's ``compact`` watchers
    (``data_bind``), which Textual prunes of closed widgets only when ``compact`` changes, so a
    console left running grew with every rebuild, and every full garbage collection (a pause of
    the whole process) grew with it: mutating ``compact`` after a rebuild prunes them.
    """

    _shown: Hashable = None  # what the keys now mounted show

    def _what_it_would_show(self) -> Hashable:
        """Every input of ``compose``: the active bindings it shows, as they are now, and its settings."""
        palette = self.app.COMMAND_PALETTE_BINDING
        return (
            self._bindings_ready,
            self.show_command_palette and self.app.ENABLE_COMMAND_PALETTE,
            tuple(
                (key, binding, enabled, tooltip)
                for key, (_, binding, enabled, tooltip) in self.screen.active_bindings.items()
                if binding.show or key == palette
            ),
        )

    async def recompose(self) -> None:
        if not self.is_attached:
            return
        wanted = self._what_it_would_show()
        if wanted == self._shown:
            return
        self._shown = wanted
        await super().recompose()
        self.mutate_reactive(widgets.Footer.compact)
