"""``python -m tui``: the ``empsync`` command, console included."""

import sys

from .entry import main

sys.exit(main())
