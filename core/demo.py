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
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
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


@dataclass
class DemoEnvironment:
    config: cfg.Config
    app: MobileApp
    emulator_host: str


@contextmanager
def demo_environment(
    employees: int, *, emulator_host: str | None = None, target_url: str | None = None, pace_s: float = 1.0
) -> Iterator[DemoEnvironment]:
    """An emulator (ours unless ``emulator_host``), seeded, with the simulated app running.

    Everything it started is stopped on exit, whatever ends the block.
    """
    emulator = None
    workdir = Path(tempfile.mkdtemp(prefix="empsync-demo-"))
    client = app = None
    try:
        host = emulator_host
        if host is None:
            print("starting the Firestore emulator…", file=sys.stderr)
            # Tied to our life even through kill -9; safe here, before any thread starts
            # (preexec_fn in a threaded process is not).
            emulator = Emulator(log_path=workdir / "emulator.log", die_with_parent=True).start()
            host = emulator.host
        target = target_url or os.environ.get("EMPSYNC_TARGET_URL") or f"sqlite:///{workdir / 'demo.db'}"
        config = demo_config(host, target)
        client = make_client(config)
        print(f"seeding {employees} employees into {host} (project {PROJECT})…", file=sys.stderr)
        seed(client, employees)
        app = MobileApp(client, start_count=employees, pace_s=pace_s).start()
        yield DemoEnvironment(config, app, host)
    finally:
        if app is not None:
            app.stop()
            print(f"demo stopped: the simulated app made {app.writes} writes ({app.invalid} invalid)", file=sys.stderr)
        if client is not None:
            client.close()
        if emulator is not None:
            emulator.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def run_demo(args: argparse.Namespace, console: Callable[[cfg.Config], int] | None = None) -> int:
    """``empsync demo``: the environment above, then the ``console`` (without one, the headless service)."""
    if args.employees < 1:
        raise cfg.ConfigError("--employees", "must be at least 1")
    if not 0 < args.pace < 86_400:  # NaN fails this too
        raise cfg.ConfigError("--pace", "must be a number of seconds above 0 and below 86,400")
    if args.seed_only:
        return seed_only(args)
    # Until the service's own handlers take over: a stop while the emulator starts or seeds cleans up too.
    previous = {signum: signal.signal(signum, _raise_interrupt) for signum in (signal.SIGTERM, signal.SIGHUP)}
    try:
        with demo_environment(
            args.employees,
            emulator_host=args.emulator_host,
            target_url=getattr(args, "target_url", None),
            pace_s=args.pace,
        ) as demo:
            if console is None:
                from .headless import run_headless

                print(f"syncing into {cfg.mask_url(demo.config.target.url)}; Ctrl-C stops the demo", file=sys.stderr)
                return run_headless(demo.config)
            return console(demo.config)
    except KeyboardInterrupt:
        return 0
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def seed_only(args: argparse.Namespace) -> int:
    """Fill an emulator and exit; one we start is left running for the user's own config."""
    emulator = None
    host = args.emulator_host
    if host is None:
        emulator = Emulator().start()
        host = emulator.host
    client = make_client(demo_config(host, "sqlite://"))
    seed(client, args.employees)
    client.close()
    print(f"seeded {args.employees} employees into {host} (project {PROJECT})")
    if emulator is not None:
        pid = emulator.process.pid
        print(f"the emulator keeps running (pid {pid}); stop it with: kill {pid}")
    print(f'point a sync.toml at it: [source] project = "{PROJECT}", emulator_host = "{host}"')
    return 0


def _raise_interrupt(signum: int, _frame) -> None:
    raise KeyboardInterrupt
