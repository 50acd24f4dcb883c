"""`ech0-moe bench compress`: achieved ratio, key-fact retention and speed of the extractive compressor."""

from __future__ import annotations

import argparse
import statistics
import sys
from collections.abc import Sequence
from typing import Any

from tqdm import tqdm

from ech0_moe.bench.common import norm as _norm


def bench_compress(rows: list[dict[str, Any]], compressor: Any, ratios: Sequence[float] = (0.3, 0.4, 0.5)) -> dict:
    """Achieved ratio, key-fact retention and speed of `compressor` on whole documents."""
    from ech0_moe.compressor import is_key_token
    from ech0_moe.text import split_sentences

    out: dict[str, Any] = {"n": len(rows), "ratios": []}
    for ratio in ratios:
        achieved, answers, facts_kept, facts_total, seconds, tokens = [], 0, 0, 0, 0.0, 0
        for r in tqdm(rows, desc=f"compress {ratio}", unit="doc", file=sys.stderr, leave=False):
            c = compressor.compress(r["question"], [r["text"]], target=ratio)
            kept = _norm(c.context)
            achieved.append(c.ratio)
            answers += _norm(r["answer"]) in kept
            # key facts: numbers/names in the sentence(s) that hold the answer
            holder = [s for s in split_sentences(r["text"]) if r["answer"].split()[0] in s]
            facts = {w.strip(".,;:()[]`*") for s in holder for w in s.split() if is_key_token(w)}
            facts_total += len(facts)
            facts_kept += sum(1 for f in facts if f in kept)
            seconds += c.seconds
            tokens += c.original_tokens
        out["ratios"].append(
            {
                "requested": ratio,
                "achieved_mean": round(statistics.mean(achieved), 4),
                "achieved_max_error": round(max(abs(a - ratio) for a in achieved), 4),
                "answer_retention": round(answers / len(rows), 4),
                "key_fact_retention": round(facts_kept / max(1, facts_total), 4),
                "ms_per_1k_tokens": round(seconds / max(1, tokens) * 1e6, 3),
            }
        )
    out["answer_retention_min"] = min(r["answer_retention"] for r in out["ratios"])
    out["ms_per_1k_tokens_max"] = max(r["ms_per_1k_tokens"] for r in out["ratios"])
    return out


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """No options: the packaged QA set over real README files."""


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Compression ratio, answer and key-fact retention, ms per 1k tokens."""
    from ech0_moe.compressor import ExtractiveCompressor
    from ech0_moe.datasets import load_qa

    return bench_compress(load_qa(), ExtractiveCompressor())
