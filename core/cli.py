"""The ``empsync`` command line: its commands, options and exit codes are a fixed contract (README).

Every expected failure ends as one or two lines on stderr and an exit code:
0 ok (or not due), 1 the sync failed, 2 usage or configuration, 3 locked.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, redirect_stdout
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Protocol

from . import __version__
from .config import Config, check_document_ids, check_interval, load
from .errors import ConfigError, EmpsyncError
from .render import emit_json, emit_text

if TYPE_CHECKING:  # the engine pulls in SQLAlchemy: only commands that need it import it
    from .engine import RunResult, SyncEngine

log = logging.getLogger("empsync")

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_LOCKED = 0, 1, 2, 3
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report it
MAX_LIMIT = 100_000  # --limit: more rows than any terminal shows, fewer than a database chokes on


class UsageError(Exception):
    pass


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # exit 2 with one line, like every other usage error
        raise UsageError(f"{self.prog}: {message}")


def whole_number(text: str) -> int:
    """ASCII digits only, as everywhere else: int() would take "٣٠" and "3_0"."""
    if not re.fullmatch(r"[+-]?[0-9]{1,18}", text.strip()):
        raise argparse.ArgumentTypeError(f"not a whole number: {text[:40]!r}")
    return int(text)


def build_parser() -> argparse.ArgumentParser:
    # --config is accepted before and after the command; SUPPRESS keeps a
    # subcommand's default from erasing a value given before it.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--config",
        metavar="PATH",
        default=argparse.SUPPRESS,
        help="sync.toml to use (default: $EMPSYNC_CONFIG or ./sync.toml)",
    )
    common.add_argument("--target-url", metavar="URL", default=argparse.SUPPRESS, help="override [target] url")
    common.add_argument(
        "-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help="log progress to stderr"
    )

    parser = Parser(
        prog="empsync", description="Keep a MySQL table in step with a Firestore collection.", parents=[common]
    )
    parser.add_argument("--version", action="version", version=f"empsync {__version__}")
    parser.add_argument("--no-ui", action="store_true", help="run the sync service headless (logs to stderr)")
    parser.add_argument("--log-format", choices=("text", "json"), default="text", help="log line format for --no-ui")
    parser.add_argument(
        "--attach",
        action="store_true",
        help="a console that never takes the sync lock: it watches and steers the service that leads",
    )
    sub = parser.add_subparsers(dest="command", parser_class=Parser, metavar="COMMAND")

    p = sub.add_parser("sync", parents=[common], help="one sync run, then exit (cron-able)")
    p.add_argument("--force", action="store_true", help="full read and compare, finds deletions")
    p.add_argument("--dry-run", action="store_true", help="show what would change; write nothing")
    p.add_argument(
        "--allow-mass-delete",
        action="store_true",
        help="let a full read delete more rows than [target] max_delete_fraction allows",
    )
    p.add_argument(
        "--id",
        action="append",
        dest="ids",
        metavar="ID",
        help="sync exactly this document (repeatable); a run of kind ids",
    )
    p.add_argument("--ids-from", metavar="FILE", help="sync the document ids in FILE, one a line (- reads stdin)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    waiting = p.add_mutually_exclusive_group()
    waiting.add_argument(
        "--wait",
        action="store_true",
        help="while a service leads: have it make the run and wait for the result (the default with --force)",
    )
    waiting.add_argument(
        "--no-wait", action="store_true", help="while a service leads: only queue the run for it, print the request id"
    )
    p.add_argument("--status", action="store_true", help="print the status instead (as `empsync status`)")
    p.add_argument(
        "--interval", metavar="N", help="persist a new interval, as `empsync interval N` (runs nothing by itself)"
    )

    for name, text in (
        ("status", "state from the database"),
        ("stats", "totals and rates"),
        ("rejects", "documents that failed validation"),
    ):
        p = sub.add_parser(name, parents=[common], help=text)
        p.add_argument("--json", action="store_true", help="print JSON")

    p = sub.add_parser("changes", parents=[common], help="the most recent field-level changes")
    p.add_argument("--limit", type=whole_number, default=20, metavar="N", help="how many (default 20)")
    p.add_argument("--json", action="store_true", help="print JSON")

    p = sub.add_parser("interval", parents=[common], help="persist a new sync interval (10 to 86,400 s)")
    p.add_argument("seconds", nargs="?", metavar="SECONDS")
    p.add_argument("--reset", action="store_true", help="forget the stored interval; sync.toml's applies again")

    sub.add_parser("pause", parents=[common], help="pause scheduled runs (stored in the database)")
    sub.add_parser("resume", parents=[common], help="resume scheduled runs")

    p = sub.add_parser("runs", parents=[common], help="the run history: counts, reads, durations, errors")
    p.add_argument("--limit", type=whole_number, default=20, metavar="N", help="how many (default 20)")
    p.add_argument("--json", action="store_true", help="print JSON")

    p = sub.add_parser("rollback", parents=[common], help="put back what a run changed (a run of kind rollback)")
    p.add_argument("run", type=whole_number, metavar="RUN_ID", help="the run, as `empsync runs` lists it")
    p.add_argument("--dry-run", action="store_true", help="list what would change; write nothing")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    p.add_argument(
        "--hold", action="store_true", help="keep these documents out of every sync (until release) instead of pausing"
    )
    p.add_argument("--cascade", action="store_true", help="also roll back later runs that changed the same rows")

    p = sub.add_parser("release", parents=[common], help="let documents held by a rollback sync again")
    p.add_argument("ids", nargs="*", metavar="ID", help="the documents to release")
    p.add_argument("--all", action="store_true", help="release every held document")

    p = sub.add_parser("verify", parents=[common], help="compare Firestore with the table without writing")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--yes", action="store_true", help="run even when it costs more reads than [sync] verify_max_reads")

    p = sub.add_parser("web", parents=[common], help="the console in a browser: each tab attaches to the service")
    p.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1; others need the token)"
    )
    p.add_argument("--port", type=whole_number, default=8766, help="port to listen on (default 8766)")
    p.add_argument("--public-url", metavar="URL", help="the address browsers use, behind a reverse proxy")

    p = sub.add_parser("notify", parents=[common], help="the notification receivers; --test sends a test message")
    p.add_argument("--test", action="store_true", help="send a test message to every receiver and report each")
    p.add_argument("--json", action="store_true", help="print JSON")

    p = sub.add_parser(
        "demo", parents=[common], help="a local emulator, sample employees and a simulated app, in the console"
    )
    p.add_argument("--seed-only", action="store_true", help="fill an emulator with sample employees and exit")
    p.add_argument("--no-ui", action="store_true", default=argparse.SUPPRESS, help="run the demo headless")
    p.add_argument(
        "--employees", type=whole_number, default=300, metavar="N", help="how many sample employees (default 300)"
    )
    p.add_argument("--emulator-host", metavar="HOST:PORT", help="use a running emulator instead of starting one")
    p.add_argument(
        "--pace", type=float, default=1.0, metavar="SECONDS", help="average seconds between app edits (default 1)"
    )
    return parser


def load_config(args: argparse.Namespace) -> Config:
    from .logs import secrets_of

    overrides = {"target.url": getattr(args, "target_url", None)}
    config = load(getattr(args, "config", None), overrides=overrides)
    secrets_of(config)
    return config


def setup_logging(verbose: bool, fmt: str = "text") -> None:
    from .logs import configure

    # Without -v a one-shot command prints its own result and errors; the log stays quiet.
    configure(level=logging.INFO if verbose else logging.CRITICAL, fmt=fmt)


# -- commands -------------------------------------------------------------------


@contextmanager
def open_engine(config: Config, schema: bool = True) -> Iterator[SyncEngine]:
    """An engine for one command, its schema ensured, closed afterwards."""
    from .engine import SyncEngine

    engine = SyncEngine(config)
    try:
        if schema:
            engine.db.ensure_schema()
        yield engine
    finally:
        engine.close()


def cmd_sync(args: argparse.Namespace, config: Config) -> int:
    """One run here; while a service holds the lock, and the run was asked for, the service makes it."""
    ids = selected_ids(args)
    runs = args.force or args.dry_run or args.wait or args.no_wait or args.allow_mass_delete or ids is not None
    if args.status:  # the seed's `employee:sync-realtime --status`
        if runs or args.interval is not None:
            raise UsageError("empsync sync --status prints the status; it takes no other option but --json")
        return cmd_status(args, config)
    if args.interval is not None:  # the seed's `--interval=N`: persist it, and run only if asked to
        with redirect_stdout(sys.stderr if runs else sys.stdout):  # stdout is the run's (--json)
            cmd_interval(argparse.Namespace(seconds=args.interval, reset=False), config)
        if not runs:
            return EXIT_OK
    raw = None  # the leader's own record of a run it made for us
    with open_engine(config, schema=False) as engine, interruptible() as stopped:  # the run ensures the schema
        try:
            result = engine.run(
                force=args.force,
                dry_run=args.dry_run,
                when_due=True,
                trigger="cli",
                allow_mass_delete=args.allow_mass_delete,
                stop=stopped.event,
                ids=ids,
            )
        except KeyboardInterrupt:  # the second signal: no waiting for the batch
            try:
                engine.state.close_runs_of_this_process()
            except EmpsyncError:
                pass  # the next run that takes the lock marks it
            raise
        asked = args.force or ids is not None or args.wait or args.no_wait  # not cron's plain `sync`
        if result.exit_code == EXIT_LOCKED and not args.dry_run and asked:
            made = made_by_the_leader(engine, args, ids, stopped, result)
            if isinstance(made, int):
                return made
            result, raw = made
    # Stopped by a signal: whole batches are kept and the run is marked interrupted; say so, and exit
    # as a shell expects (130 for Ctrl-C). A run that ended before it noticed is reported as usual.
    interrupted = stopped.signal if result.status == "failed" and raw is None else None
    if args.json:
        emit_json(raw or result.to_json())
    elif interrupted:
        print_error(f"interrupted by {interrupted.name}: {result.reason}", result.hint)
    elif result.exit_code:
        print_error(result.reason, result.hint)
    else:
        from .render import sync_summary

        emit_text(sync_summary(result))
    return 128 + interrupted if interrupted else result.exit_code


MAX_IDS = 100_000  # a longer list is a full read's job (empsync sync --force)
MAX_IDS_FILE_BYTES = 160 * 1024 * 1024  # 100,000 ids of 1,500 bytes and their newlines


def selected_ids(args: argparse.Namespace) -> list[str] | None:
    """The ids of ``--id`` and ``--ids-from`` (distinct, in order), or None for a run of everything."""
    given = list(args.ids or [])
    if args.ids_from is not None:
        given += read_id_lines(args.ids_from)
    if not given and args.ids is None and args.ids_from is None:
        return None
    if args.force or args.allow_mass_delete:
        raise UsageError("empsync sync: --id and --ids-from sync only those documents; they take no --force")
    if len(given) > MAX_IDS:
        raise ConfigError("--ids-from", f"{len(given):,} ids, more than {MAX_IDS:,}", "run empsync sync --force")
    return check_document_ids("--id" if args.ids_from is None else "--ids-from", given)


def read_id_lines(path: str) -> list[str]:
    """One id a line; only the line ending is taken off (an id may start or end with a space)."""
    try:
        if path == "-":
            data = sys.stdin.buffer.read(MAX_IDS_FILE_BYTES + 1)
        else:
            with open(path, "rb") as handle:
                data = handle.read(MAX_IDS_FILE_BYTES + 1)
    except OSError as exc:
        raise ConfigError("--ids-from", f"cannot read {path}: {exc.strerror}") from None
    if len(data) > MAX_IDS_FILE_BYTES:
        raise ConfigError("--ids-from", f"{path} is larger than {MAX_IDS_FILE_BYTES // 2**20} MB")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError("--ids-from", f"{path} is not UTF-8 text (at byte {exc.start})") from None
    lines = (line.removesuffix("\r") for line in text.split("\n"))  # not splitlines(): it splits at \x1c too
    return [line for line in lines if line]


class Interrupted:
    """Which signal asked a one-shot run to stop, and the event the run watches."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.signal: signal.Signals | None = None


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


@contextmanager
def interruptible() -> Iterator[Interrupted]:
    """Ctrl-C, SIGTERM or a hang-up stops the run after its batch; a second signal stops it at once."""
    stopped = Interrupted()

    def on_signal(signum: int, _frame) -> None:
        if stopped.event.is_set():
            raise KeyboardInterrupt
        stopped.signal = signal.Signals(signum)
        stopped.event.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in STOP_SIGNALS}
    try:
        yield stopped
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def made_by_the_leader(
    engine: SyncEngine, args: argparse.Namespace, ids: list[str] | None, stopped: Interrupted, locked: RunResult
) -> tuple[RunResult, dict[str, Any] | None] | int:
    """The lock is held: a live service makes the run (core/remote.py).

    Returns its result and the leader's own JSON of it, to print as this
    process's; or the exit code, when all is said (only queued, or stopped).
    Progress lines go to a terminal only.
    """
    from .remote import LeaderGone, NoLiveLeader, StoppedWaiting, a_service_may_answer, ask_leader

    if not a_service_may_answer(engine):  # a one-shot run holds the lock: exit 3 at once, as ever
        return locked, None

    def progress(line: str) -> None:
        if sys.stderr.isatty():
            print(f"empsync: {line}", file=sys.stderr)

    payload: dict[str, Any] = {"allow_mass_delete": True} if args.allow_mass_delete else {}
    kind = "force" if args.force else "normal"
    if ids is not None:
        kind, payload["ids"] = "ids", ids
    try:
        answer = ask_leader(engine, kind, payload, wait=not args.no_wait, progress=progress, stop=stopped.event)
    except StoppedWaiting as exc:
        print_error(exc.message, exc.hint)
        return 128 + (stopped.signal or signal.SIGINT)
    except (NoLiveLeader, LeaderGone) as exc:  # told as a run of this process would tell it
        status = "skipped" if isinstance(exc, NoLiveLeader) else "failed"
        return replace(locked, status=status, reason=exc.message, hint=exc.hint, exit_code=exc.exit_code), None
    if answer.result is not None:
        return answer.result, answer.raw
    if args.json:
        emit_json(answer.queued_json())
    else:
        print(f"queued request #{answer.request_id} ({answer.kind} run) for the leader {answer.leader}")
    return EXIT_OK


def cmd_status(args: argparse.Namespace, config: Config) -> int:
    from .render import status_text
    from .status import build_status

    with open_engine(config) as engine:
        status = build_status(engine)
    emit_json(status) if args.json else emit_text(status_text(status))
    return EXIT_OK


def cmd_stats(args: argparse.Namespace, config: Config) -> int:
    from .render import stats_text
    from .status import build_stats

    with open_engine(config) as engine:
        stats = build_stats(engine)
    emit_json(stats) if args.json else emit_text(stats_text(stats))
    return EXIT_OK


def cmd_changes(args: argparse.Namespace, config: Config) -> int:
    from .render import changes_text, jsonable

    if not 1 <= args.limit <= MAX_LIMIT:
        raise ConfigError("--limit", f"must be from 1 to {MAX_LIMIT:,}")
    with open_engine(config) as engine:
        rows = engine.state.recent_changes(limit=args.limit)
    emit_json([jsonable(r) for r in rows]) if args.json else emit_text(changes_text(rows))
    return EXIT_OK


def cmd_rejects(args: argparse.Namespace, config: Config) -> int:
    from .render import jsonable, rejects_text

    with open_engine(config) as engine:
        rows = engine.state.rejects()
    emit_json([jsonable(r) for r in rows]) if args.json else emit_text(rejects_text(rows))
    return EXIT_OK


def cmd_interval(args: argparse.Namespace, config: Config) -> int:
    if args.reset == (args.seconds is not None):
        raise UsageError("empsync interval: give SECONDS or --reset")
    seconds = None
    if not args.reset:
        try:
            seconds = whole_number(args.seconds)
        except argparse.ArgumentTypeError:
            raise ConfigError("interval", f"{args.seconds[:40]!r} is not a whole number of seconds") from None
        check_interval(seconds)
    from .state import StateKey

    with open_engine(config) as engine:
        if seconds is None:
            engine.state.forget(StateKey.INTERVAL)
            setting = engine.state.interval()
            print(f"interval reset: {setting.seconds} s from {setting.source}")
        else:
            engine.state.set_interval(seconds)
            print(f"interval set to {seconds} s (stored in the database; a running service picks it up)")
    return EXIT_OK


def cmd_pause(args: argparse.Namespace, config: Config, paused: bool = True) -> int:
    from .state import StateKey

    with open_engine(config) as engine:
        engine.state.set({StateKey.PAUSED: "1" if paused else "0"})
    print("scheduled runs paused; `empsync resume` resumes them" if paused else "scheduled runs resumed")
    return EXIT_OK


def cmd_runs(args: argparse.Namespace, config: Config) -> int:
    from .render import jsonable, runs_text

    if args.limit < 1:
        raise ConfigError("--limit", "must be at least 1")
    with open_engine(config) as engine, engine.db.connect() as conn:
        rows = engine.state.recent_runs(conn, limit=min(args.limit, 10_000))
    emit_json([jsonable(r) for r in rows]) if args.json else emit_text(runs_text(rows))
    return EXIT_OK


def cmd_rollback(args: argparse.Namespace, config: Config) -> int:
    from .render import sync_summary

    with open_engine(config) as engine:
        if not args.dry_run and not args.yes:
            preview = engine.rollback(args.run, dry_run=True, cascade=args.cascade)
            if preview.status != "ok":
                return _report(args, preview)
            if not confirm(f"{sync_summary(preview)}\nRoll back? [y/N] "):
                print_error("nothing rolled back", "run again with --yes to skip this question (no terminal: --yes)")
                return EXIT_USAGE
        result = engine.rollback(args.run, dry_run=args.dry_run, hold=args.hold, cascade=args.cascade, trigger="cli")
        if result.exit_code == EXIT_LOCKED:  # a service leads: it rolls back, holding the lock
            result = rolled_back_by_the_leader(engine, args, result)
            if isinstance(result, int):
                return result
    return _report(args, result)


def rolled_back_by_the_leader(engine: SyncEngine, args: argparse.Namespace, locked: RunResult) -> RunResult | int:
    from .remote import LeaderGone, NoLiveLeader, StoppedWaiting, ask_leader

    payload = {"run": args.run, "hold": args.hold, "cascade": args.cascade}
    try:
        answer = ask_leader(engine, "rollback", payload)
    except StoppedWaiting as exc:
        print_error(exc.message, exc.hint)
        return 130
    except (NoLiveLeader, LeaderGone) as exc:
        status = "skipped" if isinstance(exc, NoLiveLeader) else "failed"
        return replace(locked, status=status, reason=exc.message, hint=exc.hint, exit_code=exc.exit_code)
    return answer.result if answer.result is not None else locked


def _report(args: argparse.Namespace, result) -> int:
    from .render import sync_summary

    if args.json:
        emit_json(result.to_json())
    elif result.exit_code:
        print_error(result.reason, result.hint)
    else:
        emit_text(sync_summary(result))
    return result.exit_code


def confirm(question: str) -> bool:
    """Ask on the terminal; without one there is nobody to ask, which is a no."""
    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        return False
    try:
        return input(question).strip().lower() in ("y", "yes")
    except EOFError:
        return False


def cmd_release(args: argparse.Namespace, config: Config) -> int:
    from .rollback import release

    if args.all == bool(args.ids):
        raise UsageError("empsync release: give document ids or --all")
    ids = None if args.all else check_document_ids("release", args.ids)
    with open_engine(config) as engine:
        released = release(engine, ids)
    emit_text(f"released {released} held document{'' if released == 1 else 's'}; they sync again from the next run")
    return EXIT_OK


def cmd_verify(args: argparse.Namespace, config: Config) -> int:
    from .verify import run_verify

    return run_verify(config, as_json=args.json, yes=args.yes)


def cmd_notify(args: argparse.Namespace, config: Config) -> int:
    from .notify import run_notify_command

    return run_notify_command(config, test=args.test, as_json=args.json)


class ConsoleRunner(Protocol):
    """Opens the console on a config until the operator quits; returns the exit code (``attach``: never lead)."""

    def __call__(self, config: Config, *, attach: bool = False) -> int: ...


class WebRunner(Protocol):
    """Serves the console to browsers until stopped; returns the exit code."""

    def __call__(
        self, config: Config, *, host: str, port: int, public_url: str | None, target_url: str | None
    ) -> int: ...


class NoScreen(EmpsyncError):
    """The console was asked of an entry point that was handed none."""

    exit_code = EXIT_USAGE


@dataclass(frozen=True)
class Faces:
    """The screens core does not know, handed in by the entry point (``tui/entry.py``, the ``empsync`` script).

    core/ imports no screen: without them (``python -m core.cli``) the
    headless service and every one-shot command work, and the console and
    ``empsync web`` say where they are.
    """

    console: ConsoleRunner | None = None
    web: WebRunner | None = None

    def need_console(self) -> ConsoleRunner:
        if self.console is None:
            raise NoScreen("this entry point has no console", "run `empsync` for the console, or `empsync --no-ui`")
        return self.console


def cmd_web(args: argparse.Namespace, config: Config, faces: Faces) -> int:
    if not 1 <= args.port <= 65_535:
        raise ConfigError("--port", f"must be from 1 to 65,535 (got {args.port})")
    if faces.web is None:
        raise NoScreen("this entry point has no browser console", "run `empsync web`")
    return faces.web(
        config,
        host=args.host,
        port=args.port,
        public_url=args.public_url,
        target_url=getattr(args, "target_url", None),
    )


def cmd_demo(args: argparse.Namespace, faces: Faces) -> int:
    from .demo import run_demo

    return run_demo(args, console=None if getattr(args, "no_ui", False) else faces.need_console())


def cmd_service(args: argparse.Namespace, config: Config) -> int:
    from .headless import run_headless

    return run_headless(config, log_format=args.log_format, verbose=getattr(args, "verbose", False))


COMMANDS: dict[str, Callable[[argparse.Namespace, Config], int]] = {
    "sync": cmd_sync,
    "status": cmd_status,
    "stats": cmd_stats,
    "changes": cmd_changes,
    "rejects": cmd_rejects,
    "interval": cmd_interval,
    "pause": cmd_pause,
    "resume": lambda a, c: cmd_pause(a, c, paused=False),
    "verify": cmd_verify,
    "runs": cmd_runs,
    "rollback": cmd_rollback,
    "release": cmd_release,
    "notify": cmd_notify,
}


def print_error(message: str, hint: str = "") -> None:
    from .safe import terminal_safe

    # A reason may quote a document id or a value from the config: one line each, escaped.
    print(f"empsync: {terminal_safe(message)}", file=sys.stderr)
    if hint:
        print(f"  hint: {terminal_safe(hint)}", file=sys.stderr)


def main(argv: Sequence[str] | None = None, *, faces: Faces | None = None) -> int:
    """The command line; ``faces`` brings the console and the browser console (core knows neither)."""
    faces = faces or Faces()
    try:
        args = build_parser().parse_args(argv)
    except UsageError as exc:
        print_error(str(exc).removeprefix("empsync: "), "empsync --help lists the commands")
        return EXIT_USAGE
    verbose = getattr(args, "verbose", False)
    try:
        if args.attach and (args.no_ui or args.command):
            raise UsageError("--attach opens the console; it takes neither --no-ui nor a command")
        if args.command == "demo":
            setup_logging(verbose)
            return cmd_demo(args, faces)
        config = load_config(args)
        if args.command == "web":
            setup_logging(verbose)
            return cmd_web(args, config, faces)
        if args.command in COMMANDS:
            setup_logging(verbose)
            return COMMANDS[args.command](args, config)
        if args.no_ui:
            return cmd_service(args, config)
        return faces.need_console()(config, attach=args.attach)
    except UsageError as exc:
        print_error(str(exc).removeprefix("empsync: "))
        return EXIT_USAGE
    except EmpsyncError as exc:
        print_error(exc.message, exc.hint)
        return exc.exit_code
    except KeyboardInterrupt:
        print_error("interrupted")
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # `empsync changes | head`
        sys.stderr.close()
        return EXIT_OK
    except Exception as exc:  # noqa: BLE001 - a bug: say so in one line unless asked for more
        if os.environ.get("EMPSYNC_DEBUG"):
            raise
        print_error(
            f"unexpected error: {type(exc).__name__}: {exc}",
            "set EMPSYNC_DEBUG=1 for the traceback, and please report it",
        )
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
