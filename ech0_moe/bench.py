"""Benchmarks of the machinery behind `ech0-moe bench routing|compress|rag`: each returns a JSON-able dict.

The graph-driving swap benchmark sits on top, in `swap_bench.py`."""

from __future__ import annotations

import random
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from tqdm import tqdm

from ech0_moe.config import PoolConfig
from ech0_moe.datasets import BENCH_DIR, fold_of
from ech0_moe.errors import Ech0Error
from ech0_moe.router import Router, decide, fit_model, question_id

STAY_MARGINS = (0.0, 0.05, 0.1, 0.2, 0.3, 0.5)


def _accuracy(labels: list[str], predicted: list[str]) -> dict[str, Any]:
    per: dict[str, list[bool]] = defaultdict(list)
    for y, p in zip(labels, predicted, strict=True):
        per[y].append(y == p)
    per_domain = {d: round(sum(v) / len(v), 4) for d, v in sorted(per.items())}
    return {
        "macro_accuracy": round(statistics.mean(per_domain.values()), 4),
        "micro_accuracy": round(sum(y == p for y, p in zip(labels, predicted, strict=True)) / len(labels), 4),
        "per_domain": per_domain,
    }


def _route_all(
    router: Router, questions: list[str], desc: str
) -> tuple[list[dict[str, float]], list[str], list[float]]:
    """Route each question (after one warm-up): expert scores, chosen domains, seconds each."""
    router.route(questions[0])
    scores, domains, seconds = [], [], []
    for q in tqdm(questions, desc=desc, unit="q", file=sys.stderr, leave=False):
        t0 = time.perf_counter()
        d = router.route(q)
        seconds.append(time.perf_counter() - t0)
        scores.append(d.scores)
        domains.append(d.domain)
    return scores, domains, seconds


def swap_tradeoff(
    router: Router, scored: list[dict[str, float]], labels: list[str], seed: int = 0
) -> list[dict[str, Any]]:
    """Replay a shuffled stream with different stay margins: swaps saved vs accuracy lost."""
    order = list(range(len(scored)))
    random.Random(seed).shuffle(order)
    specs = router.experts
    out = []
    for margin in STAY_MARGINS:
        resident_file, swaps, hits = "", 0, 0
        for i in order:
            loaded = [n for n, s in specs.items() if s.model_key == resident_file]
            chosen, _, _ = decide(
                scored[i],
                general=router.general_expert,
                min_confidence=router.settings.min_confidence,
                loaded=loaded,
                stay_margin=margin,
            )
            if specs[chosen].model_key != resident_file:
                swaps += 1
                resident_file = specs[chosen].model_key
            hits += specs[chosen].domain == labels[i]
        out.append({"stay_margin": margin, "swaps": swaps, "accuracy": round(hits / len(order), 4)})
    base = out[0]
    for row in out:
        row["swaps_saved"] = base["swaps"] - row["swaps"]
        row["accuracy_lost"] = round(base["accuracy"] - row["accuracy"], 4)
    return out


def _fold_routers(config: PoolConfig, rows: list[dict[str, Any]], folds: int) -> list[tuple[Router, list[int]]]:
    """One router per fold, fitted (same recipe as `router fit`) on our examples plus the other folds."""
    from ech0_moe.embeddings import route_features

    vectors = route_features([r["question"] for r in rows])  # once, not once per fold
    fold = fold_of(rows, folds)
    plan = []
    for f in tqdm(range(folds), desc="fit folds", unit="fold", file=sys.stderr, leave=False):
        fit = [i for i in range(len(rows)) if fold[i] != f]
        model = fit_model(config, [(rows[i]["question"], rows[i]["domain"]) for i in fit], vectors[fit])
        plan.append((Router(config, model=model), [i for i in range(len(rows)) if fold[i] == f]))
    return plan


def bench_routing(
    config: PoolConfig, rows: list[dict[str, Any]], router: Router | None = None, folds: int = 5
) -> dict[str, Any]:
    """Accuracy and latency of the router vs the keyword baseline, only ever on questions it did not see.

    Data the router was not fitted on is routed as is. If the router saw any of
    it (the packaged model is fitted on the dev set), the answer is k-fold
    cross-validation: each fold is routed by a model refitted without that fold.
    """
    if folds < 2:
        raise Ech0Error(f"--folds must be at least 2, got {folds}")
    router = router or Router(config)
    seen = sum(question_id(r["question"]) in router.model.trained_ids for r in rows)
    if not seen:
        plan, protocol = [(router, list(range(len(rows))))], "unseen data, packaged router"
    elif len(rows) < 2 * folds:
        raise Ech0Error(f"the router was fitted on this data and {len(rows)} rows are too few to cross-validate")
    else:
        plan = _fold_routers(config, rows, folds)
        protocol = f"{folds}-fold cross-validation (the router was fitted on {seen} of these questions)"
    scored: list[dict[str, float]] = [{} for _ in rows]
    predicted, seconds = [""] * len(rows), []
    for r, index in plan:
        s, d, t = _route_all(r, [rows[i]["question"] for i in index], "router")
        for j, i in enumerate(index):
            scored[i], predicted[i] = s[j], d[j]
        seconds += t
    labels = [r["domain"] for r in rows]
    keyword = Router(config, keyword_only=True)
    _, kw_predicted, kw_seconds = _route_all(keyword, [r["question"] for r in rows], "keyword")
    return {
        "router": router.method,
        "protocol": protocol,
        "n": len(rows),
        **_accuracy(labels, predicted),
        "median_ms": _median_ms(seconds),
        "min_confidence": router.settings.min_confidence,
        "keyword_baseline": {**_accuracy(labels, kw_predicted), "median_ms": _median_ms(kw_seconds)},
        "swap_tradeoff": swap_tradeoff(router, scored, labels),
    }


def _median_ms(seconds: list[float]) -> float:
    return round(statistics.median(seconds) * 1000, 3)


def _norm(text: str) -> str:
    return " ".join(text.split())


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


def _rank(hits: list[Any], hit: Callable[[Any], bool]) -> int:
    """1-based rank of the first context satisfying `hit`, 0 when none does."""
    return next((i for i, c in enumerate(hits, 1) if hit(c)), 0)


def _recall(ranks: list[int], k: int) -> dict[str, float]:
    return {
        "recall@1": round(sum(r == 1 for r in ranks) / len(ranks), 4),
        f"recall@{k}": round(sum(0 < r <= k for r in ranks) / len(ranks), 4),
        "mrr": round(sum(1 / r for r in ranks if r) / len(ranks), 4),
    }


def bench_rag(rows: list[dict[str, Any]], kb_dir: Path, k: int = 4, max_distance: float = 0.65) -> dict[str, Any]:
    """Retrieval quality on a fresh knowledge base in `kb_dir`:
    documents (is a chunk holding the answer retrieved?) for original and paraphrased
    questions, then learned answers (after learning each question, does its paraphrase
    bring the learned entry back?)."""
    from ech0_moe.kb import KnowledgeBase

    kb = KnowledgeBase(kb_dir)
    kb.add_paths([BENCH_DIR / "docs"], progress=False)

    def search(q: str) -> list[Any]:
        return kb.search(q, k=k, max_distance=max_distance)

    def holds_answer(r: dict[str, Any]) -> Callable[[Any], bool]:
        return lambda c: _norm(r["answer"]) in _norm(c.text)

    times: list[float] = []

    def timed_search(q: str) -> list[Any]:
        t0 = time.perf_counter()
        hits = search(q)
        times.append(time.perf_counter() - t0)
        return hits

    doc_orig = [_rank(timed_search(r["question"]), holds_answer(r)) for r in rows]
    doc_para = [_rank(timed_search(r["paraphrase"]), holds_answer(r)) for r in rows]
    learned_ids = {}
    for r in tqdm(rows, desc="learn", unit="q", file=sys.stderr, leave=False):
        learned_ids[r["question"]] = kb.learn(
            r["question"], f"The answer is {r['answer']}.", expert="general", domain="general", mode="bench"
        )
    learned = [_rank(timed_search(r["paraphrase"]), lambda c, r=r: c.id == learned_ids[r["question"]]) for r in rows]
    return {
        "n": len(rows),
        "k": k,
        "max_distance": max_distance,
        "chunks": kb.stats()["by_kind"].get("document", 0),
        "learned_paraphrase": _recall(learned, k),
        "documents_original": _recall(doc_orig, k),
        "documents_paraphrase": _recall(doc_para, k),
        "median_search_ms": round(statistics.median(times) * 1000, 3),
    }


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
