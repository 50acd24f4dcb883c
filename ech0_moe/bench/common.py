"""What every benchmark shares: accuracy tables, calibration, latency percentiles, recall."""

from __future__ import annotations

import argparse
import statistics
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np


def accuracy(labels: list[str], predicted: list[str]) -> dict[str, Any]:
    per: dict[str, list[bool]] = defaultdict(list)
    for y, p in zip(labels, predicted, strict=True):
        per[y].append(y == p)
    per_expert = {d: round(sum(v) / len(v), 4) for d, v in sorted(per.items())}
    return {
        "macro_accuracy": round(statistics.mean(per_expert.values()), 4),
        "micro_accuracy": round(sum(y == p for y, p in zip(labels, predicted, strict=True)) / len(labels), 4),
        "per_expert": per_expert,
    }


def calibration_error(confidence: Sequence[float], correct: Sequence[bool], bins: int = 10) -> float:
    """Expected calibration error of the top score: |accuracy - mean confidence| per bin, weighted by size."""
    conf, hit = np.asarray(confidence), np.asarray(correct, dtype=float)
    which = np.minimum((conf * bins).astype(int), bins - 1)
    total = sum(abs(hit[which == b].mean() - conf[which == b].mean()) * (which == b).sum() for b in set(which.tolist()))
    return round(float(total) / len(conf), 4)


def latency(seconds: Sequence[float]) -> dict[str, float]:
    """p50 and p95 of per-question seconds (the benchmarks' common figures)."""
    ordered = sorted(seconds)
    if not ordered:
        return {"p50_seconds": 0.0, "p95_seconds": 0.0}
    p95 = ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]
    return {"p50_seconds": round(statistics.median(ordered), 3), "p95_seconds": round(p95, 3)}


def median_ms(seconds: list[float]) -> float:
    return round(statistics.median(seconds) * 1000, 3)


def norm(text: str) -> str:
    return " ".join(text.split())


def rank(hits: list[Any], hit: Callable[[Any], bool]) -> int:
    """1-based rank of the first context satisfying `hit`, 0 when none does."""
    return next((i for i, c in enumerate(hits, 1) if hit(c)), 0)


def recall(ranks: list[int], k: int) -> dict[str, float]:
    return {
        "recall@1": round(sum(r == 1 for r in ranks) / len(ranks), 4),
        f"recall@{k}": round(sum(0 < r <= k for r in ranks) / len(ranks), 4),
        "mrr": round(sum(1 / r for r in ranks if r) / len(ranks), 4),
    }


def burst(invoke: Callable[[int], Any], clients: int) -> tuple[list[Any], list[float], float]:
    """`clients` concurrent calls `invoke(i)`, all started at once: their results, each one's
    seconds from the start of the burst to its result (queueing included), and the wall time."""
    t0 = time.perf_counter()

    def timed(i: int) -> tuple[Any, float]:
        out = invoke(i)
        return out, time.perf_counter() - t0

    with ThreadPoolExecutor(clients) as pool:
        done = list(pool.map(timed, range(clients)))
    return [r for r, _ in done], [s for _, s in done], time.perf_counter() - t0


def max_latency(seconds: Sequence[float]) -> dict[str, float]:
    """p50, p95 and the longest, for bursts."""
    return {**latency(seconds), "max_seconds": round(max(seconds, default=0.0), 3)}


def counts_arg(text: str) -> tuple[int, ...]:
    """An option's comma-separated counts ("32,128")."""
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        values = ()
    if not values or not all(1 <= v <= 1024 for v in values):
        raise argparse.ArgumentTypeError(f"expected whole numbers from 1 to 1024 separated by commas, got {text!r}")
    return values
