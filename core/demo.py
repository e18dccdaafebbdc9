"""``empsync demo``: a local emulator, sample employees and a simulated app, synced live.

No Google account and no database server: the emulator runs on a free
loopback port, the target is a SQLite file in a temporary folder (unless
--target-url or EMPSYNC_TARGET_URL names MySQL), and the service listens in
real time. Everything started here stops when the demo does.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import signal
import sys
import tempfile
from pathlib import Path
from typing import Any

from . import config as cfg
from .emulator import Emulator
from .simulator import MobileApp, seed
from .source import make_client

log = logging.getLogger("empsync.demo")

PROJECT = "demo-hr"

# The same mapping as the repository's sync.toml, so the demo shows the real thing.
DEMO_FIELDS: dict[str, dict[str, Any]] = {
    "name": {"type": "string", "required": True, "max_length": 200},
    "email": {"type": "string", "max_length": 254},
    "phone": {"type": "string", "max_length": 40},
    "department": {"type": "string", "max_length": 100},
    "position": {"type": "string", "max_length": 100},
    "status": {"type": "string", "max_length": 20},
    "salary": {"type": "integer"},
    "hired_at": {"type": "date"},
    "address.city": {"type": "string", "column": "city", "max_length": 100},
    "skills": {"type": "json"},
    "updated_at": {"type": "datetime"},
}


def demo_config(emulator_host: str, target_url: str) -> cfg.Config:
    return cfg.from_dict(
        {
            "source": {
                "project": PROJECT,
                "emulator_host": emulator_host,
                "updated_field": "updated_at",
                "timeout": 15,
            },
            "target": {"url": target_url, "batch_size": 200},
            "sync": {"mode": "listen", "interval": 10, "force_interval": 600},
            "fields": DEMO_FIELDS,
        }
    )


def run_demo(args: argparse.Namespace) -> int:
    """The demo's whole life: start, seed, simulate, sync, then stop everything."""
    if args.employees < 1:
        raise cfg.ConfigError("--employees", "must be at least 1")
    emulator = None
    host = args.emulator_host
    if host is None:
        print("starting the Firestore emulator…", file=sys.stderr)
        emulator = Emulator(die_with_parent=not args.seed_only).start()
        host = emulator.host
    seed_config = demo_config(host, "sqlite://")
    client = make_client(seed_config)
    print(f"seeding {args.employees} employees into {host} (project {PROJECT})…", file=sys.stderr)
    seed(client, args.employees)

    if args.seed_only:
        client.close()
        if emulator is not None:
            print(
                f"emulator left running at {host} (pid {emulator.process.pid}); stop it with: kill {emulator.process.pid}\n"
                f'point a sync.toml at it: [source] project = "{PROJECT}", emulator_host = "{host}"'
            )
        return 0

    workdir = Path(tempfile.mkdtemp(prefix="empsync-demo-"))
    target = (
        getattr(args, "target_url", None) or os.environ.get("EMPSYNC_TARGET_URL") or f"sqlite:///{workdir / 'demo.db'}"
    )
    config = demo_config(host, target)
    app = MobileApp(client, start_count=args.employees).start()
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        if getattr(args, "no_ui", False):
            from .headless import run_headless

            print(f"syncing into {cfg.mask_url(target)}; Ctrl-C stops the demo", file=sys.stderr)
            return run_headless(config)
        from tui.app import run_console

        return run_console(config)
    except KeyboardInterrupt:
        return 0
    finally:
        signal.signal(signal.SIGTERM, previous)
        app.stop()
        client.close()
        if emulator is not None:
            emulator.stop()
        shutil.rmtree(workdir, ignore_errors=True)
        print(f"demo stopped: the simulated app made {app.writes} writes ({app.invalid} invalid)", file=sys.stderr)


def _raise_interrupt(signum: int, _frame) -> None:
    raise KeyboardInterrupt
