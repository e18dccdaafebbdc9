"""Benchmark sizes: defaults, `--quick`, environment variables and flags (flags win)."""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, fields, replace

BENCHMARKS = ("apply", "force", "rss", "idle", "latency", "console")


@dataclass(frozen=True)
class Sizes:
    apply_rows: int = 3_000  # rows written by the store and by the row-by-row baseline
    force_docs: int = 50_000  # documents of the force-sync-versus-stream comparison
    pairs: int = 3  # rounds, each measuring every side once in a rotating order; the medians are reported
    rss_small: int = 5_000
    rss_large: int = 50_000
    idle_docs: int = 1_000
    batch_size: int = 500  # [target] batch_size of the product runs
    page_size: int = 2_000  # [source] page_size of the product runs
    latency_samples: int = 500  # listen mode: write-to-row samples at 10 a second
    console_docs: int = 50_000  # documents of the force run the console's keys are timed during


QUICK = Sizes(
    apply_rows=400,
    force_docs=2_000,
    pairs=1,
    rss_small=500,
    rss_large=5_000,
    idle_docs=100,
    latency_samples=50,
    console_docs=2_000,
)


def env_name(field: str) -> str:
    return "EMPSYNC_BENCH_" + field.upper()


def parse(argv: list[str] | None = None) -> tuple[Sizes, tuple[str, ...], argparse.Namespace]:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="empsync benchmarks against a private emulator, MariaDB and PostgreSQL; prints JSON lines.",
    )
    parser.add_argument("--quick", action="store_true", help="small sizes for a fast check (goals are for full sizes)")
    parser.add_argument(
        "--only", default="", help=f"comma-separated subset of {','.join(BENCHMARKS)} (env EMPSYNC_BENCH_ONLY)"
    )
    parser.add_argument("--strict", action="store_true", help="exit 1 when a goal is missed")
    for f in fields(Sizes):
        parser.add_argument(
            "--" + f.name.replace("_", "-"),
            type=int,
            default=None,
            help=f"default {f.default} (env {env_name(f.name)})",
        )
    args = parser.parse_args(argv)

    sizes = QUICK if args.quick or os.environ.get("EMPSYNC_BENCH_QUICK", "") in ("1", "true") else Sizes()
    for f in fields(Sizes):
        value = getattr(args, f.name)
        if value is None and os.environ.get(env_name(f.name)):
            value = int(os.environ[env_name(f.name)])
        if value is not None:
            if value < 1:
                parser.error(f"--{f.name.replace('_', '-')} must be at least 1")
            sizes = replace(sizes, **{f.name: value})

    only = args.only or os.environ.get("EMPSYNC_BENCH_ONLY", "")
    chosen = tuple(b.strip() for b in only.split(",") if b.strip()) or BENCHMARKS
    unknown = [b for b in chosen if b not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark {unknown[0]!r}; choose from {', '.join(BENCHMARKS)}")
    return sizes, chosen, args
