"""The ``empsync`` command: core's command line, handed the console and the browser console.

core/ knows no screen (docs/architecture.md §1), so the screens come in from
here. Each is imported only when its command runs: the headless service and
the one-shot commands never load Textual.
"""

from __future__ import annotations

from collections.abc import Sequence

from core.cli import Faces
from core.cli import main as cli_main
from core.config import Config
from core.errors import EmpsyncError


def run_console(config: Config, *, attach: bool = False) -> int:
    from .app import run_console

    return run_console(config, attach=attach)


def run_web(config: Config, *, host: str, port: int, public_url: str | None, target_url: str | None) -> int:
    try:
        from .web import run_web
    except ImportError:
        raise EmpsyncError("empsync web needs textual-serve", "install it: pip install 'empsync[web]'") from None
    return run_web(config, host=host, port=port, public_url=public_url, target_url=target_url)


FACES = Faces(console=run_console, web=run_web)


def main(argv: Sequence[str] | None = None) -> int:
    return cli_main(argv, faces=FACES)
