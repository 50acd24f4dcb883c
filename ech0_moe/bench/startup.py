"""`ech0-moe bench startup`: wall seconds of a whole `ech0-moe route` process."""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from typing import Any

from tqdm import tqdm

from ech0_moe.errors import Ech0Error
from ech0_moe.paths import experts_file

STARTUP_QUESTION = "Balance the equation for burning propane."


def bench_startup(experts_file: str, runs: int = 10) -> dict[str, Any]:
    """Wall seconds of a whole `ech0-moe route` process (start, import, load the router, route),
    the latency a shell user feels; median and max over `runs` processes after one warm-up."""
    import subprocess

    if runs < 1:
        raise Ech0Error(f"--runs must be at least 1, got {runs}")
    cmd = [sys.executable, "-m", "ech0_moe.cli", "route", STARTUP_QUESTION, "--experts", str(experts_file)]
    seconds = []
    for i in tqdm(range(runs + 1), desc="route processes", unit="run", file=sys.stderr, leave=False):
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        if proc.returncode != 0:
            raise Ech0Error(f"`ech0-moe route` failed: {proc.stderr.strip().splitlines()[-1:]}")
        if i:  # the first run warms the page cache
            seconds.append(time.perf_counter() - t0)
    return {
        "command": "ech0-moe route",
        "runs": runs,
        "median_seconds": round(statistics.median(seconds), 3),
        "max_seconds": round(max(seconds), 3),
        "goal_seconds": 1.0,
    }


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--runs", type=int, default=10, metavar="N", help="how many `route` processes (default 10)")


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Median and max seconds of `ech0-moe route` processes."""
    return bench_startup(str(experts_file(args.experts_file or "")), runs=args.runs)
