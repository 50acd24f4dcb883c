"""`ech0-moe bench finish`: do answers finish within their budget, so that they can be learned?

The demo's questions plus N open questions of the dev data (their text only, balanced over
domains), each in its demo mode (the dev questions in `optimized`, which learns), through the
real graph on a fresh knowledge base. Two runs side by side at the pool's own caps: as shipped
(each expert told its budget in words, `Context.length_hint`) and with that setting off.
Reported: the share of truncated answers, the share learned, completion tokens, seconds.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from tqdm import tqdm

from ech0_moe import datasets
from ech0_moe.bench.common import latency
from ech0_moe.config import load_pool
from ech0_moe.graph import Context, build_graph, result_of
from ech0_moe.services import Services


def questions(data: str, n: int, seed: int = 0) -> list[tuple[str, str]]:
    """The demo's (question, mode) pairs, then `n` dev questions in optimized mode."""
    rows = datasets.sample(datasets.load_jsonl(data, ("question",)), n, seed)
    return [*datasets.DEMO_QUESTIONS, *((r["question"], "optimized") for r in rows)]


def run_once(asked: list[tuple[str, str]], context: Context, label: str) -> dict[str, Any]:
    from ech0_moe.memory.kb import KnowledgeBase

    with tempfile.TemporaryDirectory(prefix="ech0-bench-finish-") as tmp:
        svc = Services.create(load_pool(context.experts_file), kb=KnowledgeBase(Path(tmp) / "kb"))
        svc.pool.unload_all()
        graph = build_graph(services=svc)
        results, seconds = [], []
        for question, mode in tqdm(asked, desc=f"finish ({label})", unit="q", file=sys.stderr, leave=False):
            t0 = time.perf_counter()
            results.append(result_of(graph.invoke({"query": question, "mode": mode}, context=context)))
            seconds.append(time.perf_counter() - t0)
    learning = [r for r in results if r["mode"] in ("optimized", "ensemble")]
    return {
        "answers": len(results),
        "truncated_share": round(sum(r["truncated"] for r in results) / len(results), 4),
        "learned_share": round(sum(bool(r["learned_id"]) for r in learning) / max(1, len(learning)), 4),
        "errors": sum(bool(r["error"]) for r in results),
        "completion_tokens_mean": round(statistics.mean(r["tokens"].get("completion", 0) for r in results), 1),
        **latency(seconds),
    }


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data", metavar="FILE", default=str(datasets.ROUTING_DEV), help="dev questions (default: routing-dev.jsonl)"
    )
    parser.add_argument("--questions", type=int, default=50, metavar="N", help="dev questions beside the demo's (50)")
    parser.add_argument("--seed", type=int, default=0, help="the sample's seed (default 0)")


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Truncated and learned shares at defaults, beside the same caps without the budget in the prompt."""
    asked = questions(args.data, args.questions, args.seed)
    shipped = Context.of(**vars(args))
    unhinted = Context.of(**{**vars(args), "length_hint": False})
    return {
        "questions": len(asked),
        "shipped": {"length_hint": True, **run_once(asked, shipped, "shipped")},
        "no_length_hint": {"length_hint": False, **run_once(asked, unhinted, "no length hint")},
        "goal_truncated_share": 0.10,
    }
