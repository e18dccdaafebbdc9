"""`python -m bench.soak`: the simulated mobile app against a listening service, with periodic faults.

For ``--minutes`` (30 by default) the demo's simulated app (``core.simulator``)
edits the collection at a steady ``--rate`` while a real ``empsync --no-ui``
listens, on a private emulator and MariaDB. Every ``--fault-every`` seconds
one fault is injected, in turn: kill -9 of the service and a restart,
MariaDB restarted (SIGKILL or SIGTERM), the emulator restarted (with its
data), and every one of the service's database connections killed. The
service's resident size is sampled from /proc all along.

At the end the app stops, the table must converge on Firestore through the
listener alone (no force run is due during the soak), and then one force
run (the safety net) must find nothing to insert or update — only the
deletions a listener cannot see (documents unchanged since the watermark).
One JSON object goes to stdout:

- ``written``: the app's successful writes, by kind, and its failed ones
  (attempted while the emulator was down);
- ``synced``: valid documents whose row equals them; ``rejected``: documents
  that are invalid now (each a reject with its reason);
- ``lost`` (goal 0): documents missing or different after convergence, plus
  what the safety-net force run still had to insert or update;
- ``duplicated`` (goal 0): audit rows replaying a change already recorded
  (``tests/faults/checks.py`` defines it);
- ``rss``: the series (seconds, MB, pid), the peak per minute, and the slope
  in MB per hour fitted within each process's lifetime (a restart resets the
  size, so segments are fitted apart and pooled), after a warm-up;
- ``listener_reconnects``: re-subscriptions logged by the services.

Progress goes to stderr. ``--minutes 3 --fault-every 30`` is a quick check.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from core import config as cfg
from core.demo import DEMO_FIELDS
from core.emulator import free_port
from core.simulator import MobileApp, seed
from core.source import make_client
from tests.conftest import run_cli, write_toml
from tests.faults.checks import audit_report, slope, verify_now
from tests.faults.support import TOKEN, Db, Paced, PersistentEmulator, api, connections, kill_connections
from tests.servers import MariaDB
from tests.service_support import Headless, wait_for

from .harness import say

PROJECT = "soak-hr"
FAULTS = ("mariadb-restart", "emulator-restart", "kill-connections", "kill-9")
RSS_WARMUP_S = 60.0
GOAL_RSS_SLOPE_MB_PER_HOUR = 10.0


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.split("\n\n")[0])
    p.add_argument("--minutes", type=float, default=30.0, help="how long the app writes (default 30)")
    p.add_argument("--rate", type=float, default=10.0, help="app writes per second (default 10)")
    p.add_argument("--employees", type=int, default=1_000, help="employees seeded before the soak (default 1000)")
    p.add_argument("--fault-every", type=float, default=120.0, help="seconds between faults (default 120)")
    p.add_argument("--sample-every", type=float, default=5.0, help="seconds between RSS samples (default 5)")
    p.add_argument(
        "--faults",
        default=",".join(FAULTS),
        help=f"which faults, in turn (default {','.join(FAULTS)}; 'none' for none)",
    )
    p.add_argument("--seed", type=int, default=None, help="random seed (default: random, printed)")
    args = p.parse_args(argv)
    args.faults = () if args.faults == "none" else tuple(f.strip() for f in args.faults.split(",") if f.strip())
    if unknown := [f for f in args.faults if f not in FAULTS]:
        p.error(f"unknown fault {unknown[0]!r}; choose from {', '.join(FAULTS)}")
    if args.minutes <= 0 or args.rate <= 0 or args.fault_every <= 0 or args.employees < 20:
        p.error("--minutes, --rate and --fault-every must be positive, --employees at least 20")
    return args


class App(Paced):
    """The simulated mobile app, stepped at a steady rate on its own thread; pausable."""

    def __init__(self, client, employees: int, rate: float, rng_seed: int) -> None:
        super().__init__(1.0 / rate, "soak-app")
        self.app = MobileApp(client, start_count=employees, rng_seed=rng_seed)
        self.ok: Counter[str] = Counter()
        self.failed = 0

    def write(self) -> None:
        try:
            self.ok[kind_of(self.app.step())] += 1
        except Exception:  # noqa: BLE001 - the emulator is down: the app's write fails, as offline
            self.failed += 1


def kind_of(what: str) -> str:
    """The kind of edit from MobileApp.step's description ("hired emp-1", "emp-2 left", ...)."""
    if what.startswith("invalid"):
        return "invalid"
    if what.endswith(" left"):
        return "left"
    return what.split()[0]


class RssSampler:
    """VmRSS of whichever process ``current()`` names, every ``every`` seconds."""

    def __init__(self, current: Callable[[], int], every: float) -> None:
        self.current, self.every = current, every
        self.started = time.monotonic()
        self.samples: list[tuple[float, float, int]] = []
        self.threads: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="soak-rss", daemon=True)

    def start(self) -> RssSampler:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def _loop(self) -> None:
        while not self._stop.wait(self.every):
            pid = self.current()
            try:
                with open(f"/proc/{pid}/status") as status:
                    fields = dict(line.split(":", 1) for line in status if ":" in line)
                kb, threads = int(fields["VmRSS"].split()[0]), int(fields["Threads"])
            except (OSError, KeyError, ValueError):
                continue  # between a kill and the restart
            t = round(time.monotonic() - self.started, 1)
            self.samples.append((t, round(kb / 1024, 1), pid))
            self.threads.append((t, threads))

    def report(self) -> dict[str, Any]:
        by_pid: dict[int, list[tuple[float, float]]] = {}
        for t, mb, pid in self.samples:
            by_pid.setdefault(pid, []).append((t, mb))
        # Within each process, after its warm-up: pooled least squares (one slope, an offset per process).
        num = den = 0.0
        segments = []
        for pid, points in by_pid.items():
            warm = [(t, mb) for t, mb in points if t - points[0][0] >= RSS_WARMUP_S]
            if len(warm) >= 3:
                mt = sum(t for t, _ in warm) / len(warm)
                mm = sum(mb for _, mb in warm) / len(warm)
                num += sum((t - mt) * (mb - mm) for t, mb in warm)
                den += sum((t - mt) ** 2 for t, _ in warm)
            segments.append(
                {
                    "pid": pid,
                    "from_s": points[0][0],
                    "to_s": points[-1][0],
                    "peak_mb": max(mb for _, mb in points),
                    "slope_mb_per_hour": round(slope(warm) * 3600, 2) if len(warm) >= 3 else None,
                }
            )
        per_minute: dict[int, float] = {}
        for t, mb, _ in self.samples:
            per_minute[int(t // 60)] = max(per_minute.get(int(t // 60), 0.0), mb)
        pooled = num / den * 3600 if den else 0.0
        return {
            "samples": len(self.samples),
            "every_s": self.every,
            "peak_mb": max((mb for _, mb, _ in self.samples), default=None),
            "peak_per_minute_mb": [per_minute[m] for m in sorted(per_minute)],
            "slope_mb_per_hour": round(pooled, 2),
            "segments": segments,
            "series": [[t, mb, pid] for t, mb, pid in self.samples],
            "threads": [[t, n] for t, n in self.threads],
        }


class Soak:
    def __init__(self, args: argparse.Namespace, base: Path) -> None:
        self.args, self.base = args, base
        self.rng = random.Random(args.seed)
        self.emulator = PersistentEmulator(port=free_port(), log_path=base / "emulator.log")
        self.mariadb = MariaDB(base / "mariadb")
        self.procs: list[Headless] = []
        self.faults: list[dict[str, Any]] = []
        self.api_port = free_port()

    # -- set-up ------------------------------------------------------------------

    def start(self) -> None:
        say("soak: starting a private emulator and MariaDB")
        self.emulator.start()
        self.mariadb.start()
        self.url = self.mariadb.url(self.mariadb.create_database("soak"))
        self.config = cfg.from_dict(
            {
                "source": {
                    "project": PROJECT,
                    "emulator_host": self.emulator.host,
                    "updated_field": "updated_at",
                    "timeout": 5,
                },
                "target": {"url": self.url, "batch_size": 200},
                "sync": {"mode": "listen", "interval": 10, "force_interval": 7 * 86_400},
                "api": {"enabled": True, "host": "127.0.0.1", "port": self.api_port, "token": TOKEN},
                "fields": DEMO_FIELDS,
            }
        )
        self.path = write_toml(self.base / "sync.toml", self.config)
        self.client = make_client(self.config)
        seed(self.client, self.args.employees)
        done = run_cli("--config", str(self.path), "sync", "--force", "--json", timeout=600)
        if done.returncode != 0:
            raise RuntimeError(f"the first force sync failed: {done.stderr.strip()[-1000:]}")
        self.service()

    def service(self) -> Headless:
        proc = Headless(self.path)
        self.procs.append(proc)
        proc.wait_line("Status: listening", timeout=180)
        return proc

    @property
    def current(self) -> Headless:
        return self.procs[-1]

    def listening(self, timeout: float = 240) -> None:
        """Until the service says it leads and listens again (from its API)."""

        def check() -> bool:
            if self.current.process.poll() is not None:
                raise RuntimeError(f"the service exited:\n{self.current.text()[-3000:]}")
            code, status = api(self.api_port, "GET", "status")
            return code == 200 and status.get("is_leader") and status.get("listen_state") == "listening"

        wait_for(check, timeout, "the service listening again", 0.2)

    # -- faults -----------------------------------------------------------------

    def inject(self, kind: str, app: App) -> dict[str, Any]:
        at = time.monotonic()
        detail = ""
        if kind == "kill-9":
            self.current.process.send_signal(signal.SIGKILL)
            self.current.wait(30)
            self.service()
        elif kind == "mariadb-restart":
            how = self.rng.choice(["SIGKILL", "SIGTERM"])
            self.mariadb.stop(kill=how == "SIGKILL")
            down = self.rng.uniform(1.0, 5.0)
            time.sleep(down)
            self.mariadb.start()
            detail = f"{how}, down {down:.1f} s"
        elif kind == "emulator-restart":
            app.pause()
            self.emulator.export(PROJECT, self.base / f"export-{len(self.faults)}")
            self.emulator.stop(kill=True)
            down = self.rng.uniform(1.0, 5.0)
            time.sleep(down)
            self.emulator.start()
            app.resume()
            detail = f"down {down:.1f} s"
        elif kind == "kill-connections":
            root = self.mariadb.root()
            try:
                detail = f"{kill_connections(root, connections(root, 'soak'))} connections"
            finally:
                root.close()
        fault: dict[str, Any] = {"t_s": round(at - self.t0, 1), "fault": kind, "detail": detail}
        try:
            self.listening()
        except AssertionError as exc:  # not back: a finding, reported with what the service said
            fault["listening_again_s"] = None
            fault["stuck"] = {
                "waited": str(exc).split(" (last")[0],
                "status": api(self.api_port, "GET", "status")[1],
                "log_tail": self.current.lines[-40:],
            }
            return fault
        fault["listening_again_s"] = round(time.monotonic() - at, 1)
        return fault

    # -- the run ----------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        args = self.args
        self.t0 = time.monotonic()
        app = App(self.client, args.employees, args.rate, self.rng.randrange(2**31)).start()
        rss = RssSampler(lambda: self.current.pid, args.sample_every).start()
        end = self.t0 + args.minutes * 60
        say(f"soak: {args.minutes:g} min at {args.rate:g} writes/s, a fault every {args.fault_every:g} s")
        n = 0
        while True:
            next_fault = time.monotonic() + args.fault_every * self.rng.uniform(0.75, 1.25)
            if next_fault >= end or not args.faults:
                break
            time.sleep(max(0.0, next_fault - time.monotonic()))
            fault = self.inject(args.faults[n % len(args.faults)], app)
            n += 1
            self.faults.append(fault)
            if "stuck" in fault:
                say(f"soak: the service did not come back after {fault['fault']}: no more faults; app goes on")
                break
            say(f"soak: {fault}; {sum(app.ok.values())} writes so far")
        time.sleep(max(0.0, end - time.monotonic()))
        app.stop()
        say("soak: the app stopped; waiting for the table to converge through the listener")
        converged, before = self.converge()
        rss.stop()
        force = self.safety_net()
        after = verify_now(self.config)
        proc = self.current
        proc.signal(signal.SIGTERM)
        clean_exit = proc.wait(20) == 0
        audit = audit_report(self.url)
        lost = len(before.missing) + len(before.different) + force["inserted"] + force["updated"]
        written = dict(app.ok)
        return {
            "benchmark": "soak",
            "minutes": args.minutes,
            "rate_per_s": args.rate,
            "employees": args.employees,
            "seed": args.seed,
            "written": {"total": sum(written.values()), "by_kind": written, "failed": app.failed},
            "synced": after.documents - after.rejected - len(after.missing) - len(after.different),
            "documents": after.documents,
            "rejected": after.rejected,
            "lost": lost,
            "duplicated": audit.duplicates,
            "converged_s": converged,
            "before_safety_net": {
                "missing": len(before.missing),
                "different": len(before.different),
                "extra": len(before.extra),
                "first": (before.missing + [d["id"] for d in before.different])[:10],
            },
            "safety_net_force_run": force,
            "verify_after": {"differences": after.differences, "rows": after.rows},
            "audit": audit.to_json(),
            "faults": self.faults,
            "faults_injected": len(self.faults),
            "faults_not_recovered": sum(1 for f in self.faults if "stuck" in f),
            "service_restarts": len(self.procs) - 1,
            "listener_reconnects": sum(p.text().count("Re-subscribing") for p in self.procs),
            "clean_exit": clean_exit,
            "rss": rss.report(),
        }

    def converge(self, timeout: float = 300) -> tuple[float | None, Any]:
        """Until nothing is missing or different (extra rows wait for the force run); returns (seconds, report)."""
        started = time.monotonic()
        while True:
            report = verify_now(self.config)
            if not report.missing and not report.different:
                return round(time.monotonic() - started, 1), report
            if time.monotonic() - started > timeout:
                return None, report
            time.sleep(2.0)

    def safety_net(self) -> dict[str, Any]:
        """One force run through the service's API; its counts."""
        code, _ = api(self.api_port, "POST", "trigger", {"force": True})
        if code != 202:
            raise RuntimeError(f"the force trigger answered {code}")

        db = Db(self.url)
        columns = ("status", "inserted", "updated", "deleted", "unchanged", "rejected")

        def done():
            found = db.rows(
                f"SELECT {', '.join(columns)} FROM empsync_runs WHERE kind = 'force' AND `trigger` = 'api' "
                "AND status <> 'running' ORDER BY id DESC LIMIT 1"
            )
            return found and dict(zip(columns, found[0], strict=True))

        try:
            return wait_for(done, 600, "the safety-net force run", 0.5)
        finally:
            db.close()

    def close(self) -> None:
        for proc in self.procs:
            proc.close()
        try:
            self.client.close()
        except Exception:  # noqa: BLE001 - the emulator may be gone already
            pass
        self.mariadb.stop()
        self.emulator.stop()


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if args.seed is None:
        args.seed = random.SystemRandom().randrange(2**31)
    say(f"soak: seed {args.seed}")
    base = Path(tempfile.mkdtemp(prefix="empsync-soak-"))
    soak = Soak(args, base)
    try:
        soak.start()
        result = soak.run()
    finally:
        soak.close()
        logs = base / "service-logs.txt"
        logs.write_text("\n\n".join(f"== pid {p.pid}\n{p.text()}" for p in soak.procs))
        kept = Path(tempfile.mkdtemp(prefix="empsync-soak-logs-"))
        shutil.copy(logs, kept / logs.name)
        if (base / "emulator.log").exists():
            shutil.copy(base / "emulator.log", kept / "emulator.log")
        say(f"soak: service and emulator logs kept in {kept}")
        shutil.rmtree(base, ignore_errors=True)
    rss = result["rss"]
    result["goals"] = [
        {
            "benchmark": "soak",
            "what": "faults the service did not recover from",
            "figure": result["faults_not_recovered"],
            "goal": "<= 0",
            "pass": result["faults_not_recovered"] == 0,
        },
        {
            "benchmark": "soak",
            "what": "documents lost",
            "figure": result["lost"],
            "goal": "<= 0",
            "pass": result["lost"] == 0,
        },
        {
            "benchmark": "soak",
            "what": "duplicated changes",
            "figure": result["duplicated"],
            "goal": "<= 0",
            "pass": result["duplicated"] == 0,
        },
        {
            "benchmark": "soak",
            "what": "RSS slope within a process (MB/hour)",
            "figure": rss["slope_mb_per_hour"],
            "goal": f"<= {GOAL_RSS_SLOPE_MB_PER_HOUR:g} MB/h",
            "pass": rss["slope_mb_per_hour"] <= GOAL_RSS_SLOPE_MB_PER_HOUR,
        },
    ]
    print(json.dumps(result), flush=True)
    say(
        f"soak: written {result['written']['total']}, synced {result['synced']}, rejected {result['rejected']}, "
        f"lost {result['lost']}, duplicated {result['duplicated']}, {result['faults_injected']} faults, "
        f"{result['listener_reconnects']} reconnects, RSS peak {rss['peak_mb']} MB, "
        f"slope {rss['slope_mb_per_hour']} MB/h"
    )
    return 0 if all(g["pass"] for g in result["goals"]) else 1


if __name__ == "__main__":
    sys.exit(main())
