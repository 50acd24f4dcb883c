"""`ech0-moe bench vote`: does the ensemble's vote pool answers that mean the same?

Two sets of labelled answer pairs, each split once into a part the rules and threshold were
chosen on and a part never tuned on:
- `exam`: derived from public exam data we did not write (MMLU options; `bench/pairs.py`):
  `tune` / `test` by a hash of the question;
- `own`: `benchmarks/answer-pairs.jsonl`, written for ECH0 MoE: `fit` / `held-out`.

Side by side on each part: `vote.Agreement` and MiniLM cosine alone (its threshold chosen on
the tuning parts). "Short" rows are pairs of two named answers of at most four words, where a
merge (Canberra with Sydney) would pick the winner by accident.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

import numpy as np

from ech0_moe import datasets
from ech0_moe.bench.pairs import derive
from ech0_moe.vote import AGREE_SIMILARITY, Agreement, pair_scores, short_answer

THRESHOLDS = tuple(round(0.3 + 0.025 * i, 3) for i in range(27))  # 0.3 ... 0.95
TUNING = ("fit", "tune")


def _scores(part: list[dict[str, Any]], same: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    predicted = [same(r) for r in part]
    out: dict[str, Any] = pair_scores([r["same"] for r in part], predicted)
    short = [(r, p) for r, p in zip(part, predicted, strict=True) if short_answer(r["a"]) and short_answer(r["b"])]
    different = [p for r, p in short if not r["same"]]
    out["short"] = {
        **pair_scores([r["same"] for r, _ in short], [p for _, p in short]),
        "different_kept_apart": round(1 - sum(different) / len(different), 4) if different else 0.0,
    }
    return out


def bench_vote(own: list[dict[str, Any]], exam: list[dict[str, Any]]) -> dict[str, Any]:
    from ech0_moe.embeddings import embed

    rows = [{**r, "set": "own"} for r in own] + [{**r, "set": "exam"} for r in exam]
    texts = sorted({t for r in rows for t in (r["a"], r["b"])})
    vectors = dict(zip(texts, embed(texts), strict=True))

    def cached(pair: list[str]) -> np.ndarray:
        missing = [t for t in pair if t not in vectors]  # parts of an answer (after its "Yes,")
        vectors.update(zip(missing, embed(missing), strict=True))
        return np.vstack([vectors[t] for t in pair])

    def cosine(r: dict[str, Any]) -> float:
        return float(vectors[r["a"]] @ vectors[r["b"]])

    tuning = [r for r in rows if r.get("split") in TUNING]
    tuning_sets = [[r for r in tuning if r["set"] == name] for name in ("own", "exam")]

    def right(threshold: float) -> float:
        """Mean accuracy over the tuning parts, each set weighed alike (the exam's are 11x more)."""
        agreement = Agreement(cached, threshold)
        rates = [
            sum(agreement.same(r["a"], r["b"], r["question"]) == r["same"] for r in s) / len(s)
            for s in tuning_sets
            if s
        ]
        return sum(rates) / max(1, len(rates))

    best = max(THRESHOLDS, key=lambda t: (round(right(t), 4), -t))  # ties: the lowest (more agreement found)
    cos_best = max(THRESHOLDS, key=lambda t: sum((cosine(r) >= t) == r["same"] for r in tuning))
    shipped = Agreement(cached, AGREE_SIMILARITY)
    parts: dict[str, Any] = {}
    errors: list[dict[str, Any]] = []
    for name, split in (("exam", "tune"), ("exam", "test"), ("own", "fit"), ("own", "held-out")):
        part = [r for r in rows if r["set"] == name and r.get("split", "held-out") == split]
        if not part:
            continue
        parts[f"{name}:{split}"] = {
            "agreement": _scores(part, lambda r: shipped.same(r["a"], r["b"], r["question"])),
            "cosine_only": _scores(part, lambda r: cosine(r) >= cos_best),
        }
        if split not in TUNING:
            errors += [
                {"set": name, "a": r["a"], "b": r["b"], "same": r["same"]}
                for r in part
                if shipped.same(r["a"], r["b"], r["question"]) != r["same"]
            ]
    return {
        "pairs": {"exam": len(exam), "own": len(own)},
        "threshold_shipped": AGREE_SIMILARITY,
        "threshold_best_on_tuning": best,
        "cosine_only_threshold": cos_best,
        "parts": parts,
        "errors_untuned": errors[:60],
    }


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data",
        metavar="FILE",
        default=str(datasets.BENCH_DIR / "answer-pairs.jsonl"),
        help="our labelled pairs, JSONL of {question, a, b, same, split} (default: benchmarks/answer-pairs.jsonl)",
    )
    parser.add_argument(
        "--exam",
        metavar="FILE",
        default=str(datasets.ROUTING_DEV),
        help="exam questions with options, JSONL of {question, choices, answer} to derive pairs from "
        "(default: the shipped MMLU dev set); 'none' to skip",
    )


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Pair accuracy, precision and recall of the vote's agreement beside cosine alone."""
    own = datasets.load_jsonl(args.data, ("question", "a", "b", "same"))
    exam = [] if args.exam == "none" else derive(datasets.load_jsonl(args.exam, ("question", "choices", "answer")))
    return bench_vote(own, exam)
