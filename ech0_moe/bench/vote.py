"""`ech0-moe bench vote`: does the ensemble's vote pool answers that mean the same?

On labelled answer pairs (`benchmarks/answer-pairs.jsonl`: same meaning or not, a third of the
"different" ones hard), side by side: the old first-80-characters normaliser, MiniLM cosine
alone, and `vote.Agreement` (final answers, then cosine). The cosine threshold is chosen on the
`fit` half; accuracy, precision and recall are reported on the `held-out` half, never tuned on.
"""

from __future__ import annotations

import argparse
import re
from typing import Any

import numpy as np

from ech0_moe import datasets
from ech0_moe.vote import AGREE_SIMILARITY, Agreement, pair_scores

THRESHOLDS = tuple(round(0.3 + 0.025 * i, 3) for i in range(27))  # 0.3 ... 0.95


def legacy_key(answer: str) -> str:
    """The vote key before this benchmark: a leading letter, else the first 80 lower-case characters."""
    text = answer.strip()
    m = re.match(r"^\(?([A-Da-d])[).:\s]", text + " ")
    return m.group(1).upper() if m else re.sub(r"[^a-z0-9]+", " ", text.lower()).strip()[:80]


def bench_vote(rows: list[dict[str, Any]]) -> dict[str, Any]:
    from ech0_moe.embeddings import embed

    fit = [r for r in rows if r.get("split") == "fit"]
    held = [r for r in rows if r.get("split") != "fit"]
    texts = sorted({t for r in rows for t in (r["a"], r["b"])})
    vectors = dict(zip(texts, embed(texts), strict=True))

    def cached(pair: list[str]) -> np.ndarray:
        missing = [t for t in pair if t not in vectors]  # parts of an answer (after its "Yes,")
        vectors.update(zip(missing, embed(missing), strict=True))
        return np.vstack([vectors[t] for t in pair])

    def cosine(r: dict[str, Any]) -> float:
        return float(vectors[r["a"]] @ vectors[r["b"]])

    def accuracy(part: list[dict[str, Any]], threshold: float) -> float:
        agreement = Agreement(cached, threshold)
        return pair_scores([r["same"] for r in part], [agreement.same(r["a"], r["b"], r["question"]) for r in part])[
            "accuracy"
        ]

    best = max(THRESHOLDS, key=lambda t: (accuracy(fit, t), -t))  # ties: the lowest (more agreement found)
    cos_best = max(THRESHOLDS, key=lambda t: sum((cosine(r) >= t) == r["same"] for r in fit))
    shipped = Agreement(cached, AGREE_SIMILARITY)
    labels = [r["same"] for r in held]
    hard = [r for r in held if r.get("hard") or r["same"]]
    return {
        "pairs": len(rows),
        "fit": len(fit),
        "held_out_pairs": len(held),
        "hard_different_held_out": sum(bool(r.get("hard")) for r in held),
        "threshold_shipped": AGREE_SIMILARITY,
        "threshold_best_on_fit": best,
        "fit_accuracy_shipped": accuracy(fit, AGREE_SIMILARITY),
        "held_out": {
            "legacy_normaliser": pair_scores(labels, [legacy_key(r["a"]) == legacy_key(r["b"]) for r in held]),
            "cosine_only": {
                "threshold": cos_best,
                **pair_scores(labels, [cosine(r) >= cos_best for r in held]),
            },
            "agreement": pair_scores(labels, [shipped.same(r["a"], r["b"], r["question"]) for r in held]),
            "agreement_on_hard_and_same": pair_scores(
                [r["same"] for r in hard], [shipped.same(r["a"], r["b"], r["question"]) for r in hard]
            ),
        },
        "errors_held_out": [
            {"a": r["a"], "b": r["b"], "same": r["same"]}
            for r in held
            if shipped.same(r["a"], r["b"], r["question"]) != r["same"]
        ],
    }


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data",
        metavar="FILE",
        default=str(datasets.BENCH_DIR / "answer-pairs.jsonl"),
        help="JSONL of {a, b, same, hard, split} (default: benchmarks/answer-pairs.jsonl)",
    )


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Pair accuracy, precision and recall of the vote's agreement against the old normaliser."""
    return bench_vote(datasets.load_jsonl(args.data, ("a", "b", "same")))
