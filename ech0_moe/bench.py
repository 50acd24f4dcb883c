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

import numpy as np
from tqdm import tqdm

from ech0_moe.config import PoolConfig
from ech0_moe.datasets import BENCH_DIR, fold_of
from ech0_moe.errors import Ech0Error
from ech0_moe.router import Router, RouterModel, decide
from ech0_moe.router_fit import experts_by_domain, fit_model

STAY_MARGINS = (0.0, 0.05, 0.1, 0.2, 0.3, 0.5)


def _accuracy(labels: list[str], predicted: list[str]) -> dict[str, Any]:
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


def gold_experts(config: PoolConfig, rows: list[dict[str, Any]], subject_map: dict[str, str] | None) -> list[str]:
    """The expert each row should go to: its `expert`, else `subject_map[subject]`, else the one
    expert of its `domain`; anything else is one error naming the row."""
    names = set(config.names)
    by_domain = experts_by_domain(config)
    gold = []
    for n, row in enumerate(rows, 1):
        label = row.get("expert") or (subject_map or {}).get(row.get("subject", ""))
        if label is None:
            candidates = by_domain.get(row.get("domain", ""), [])
            if len(candidates) != 1:
                raise Ech0Error(
                    f"row {n}: domain {row.get('domain')!r} has {len(candidates)} experts in the pool: "
                    "give rows an 'expert', or --map SUBJECTS.yaml (subject: expert)"
                )
            label = candidates[0]
        if label not in names:
            raise Ech0Error(f"row {n}: expert {label!r} is not in the pool")
        gold.append(label)
    return gold


def _route_all(
    router: Router, questions: list[str], desc: str
) -> tuple[list[dict[str, float]], list[str], list[float]]:
    """Route each question (after one warm-up): expert scores, chosen experts, seconds each."""
    router.route(questions[0])
    scores, experts, seconds = [], [], []
    for q in tqdm(questions, desc=desc, unit="q", file=sys.stderr, leave=False):
        t0 = time.perf_counter()
        d = router.route(q)
        seconds.append(time.perf_counter() - t0)
        scores.append(d.scores)
        experts.append(d.expert)
    return scores, experts, seconds


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
                min_confidence=router.config.confidence_floor,
                loaded=loaded,
                stay_margin=margin,
            )
            if specs[chosen].model_key != resident_file:
                swaps += 1
                resident_file = specs[chosen].model_key
            hits += chosen == labels[i]
        out.append({"stay_margin": margin, "swaps": swaps, "accuracy": round(hits / len(order), 4)})
    base = out[0]
    for row in out:
        row["swaps_saved"] = base["swaps"] - row["swaps"]
        row["accuracy_lost"] = round(base["accuracy"] - row["accuracy"], 4)
    return out


DECOYS = {  # synthetic experts for topics the data never asks about: they must not steal questions
    "cooking": "Cooking and recipes: ingredients, baking, kitchen techniques and cuisines.",
    "sports": "Sports: rules of games, athletes, teams, training and competitions.",
    "music": "Music: instruments, composers, genres, harmony and rhythm.",
    "travel": "Travel: visas, flights, hotels, itineraries and packing.",
    "gardening": "Gardening: soil, seeds, pruning, pests and growing vegetables.",
    "fashion": "Fashion: clothing styles, fabrics, designers and trends.",
    "gaming": "Video games: consoles, game design, strategies and esports.",
}


def subject_pool(config: PoolConfig, rows: list[dict[str, Any]], size: int) -> tuple[PoolConfig, dict[str, str]]:
    """A synthetic pool of `size` experts: one per `subject` of the rows (described by its name
    only) plus decoy experts for topics the rows never ask about; and the subject map for it."""
    from dataclasses import replace

    subjects = sorted({str(r.get("subject", "")) for r in rows} - {""})
    if not subjects or not len(subjects) <= size <= len(subjects) + len(DECOYS):
        raise Ech0Error(
            f"--synthetic: the data has {len(subjects)} subjects; give {len(subjects)} to "
            f"{len(subjects) + len(DECOYS)} experts"
        )
    base = config.experts[0]
    topics = {s: "Questions about " + s.replace("_", " ") + "." for s in subjects}
    topics.update(dict(list(DECOYS.items())[: size - len(subjects)]))
    experts = tuple(replace(base, name=n, domain=n, description=d, examples=(), keywords=()) for n, d in topics.items())
    general = "miscellaneous" if "miscellaneous" in topics else subjects[0]
    return replace(config, experts=experts, general_expert=general), {s: s for s in subjects}


def _scores(model: RouterModel, vectors: np.ndarray) -> list[dict[str, float]]:
    return [dict(zip(model.classes, row.tolist(), strict=True)) for row in model.proba(vectors)]


def _evaluate(config: PoolConfig, scored: list[dict[str, float]], gold: list[str]) -> dict[str, Any]:
    """Accuracy after the confidence fallback, calibration of the top score, and how often it abstained."""
    chosen = [decide(s, general=config.general_expert, min_confidence=config.confidence_floor)[0] for s in scored]
    top = [max(s, key=s.__getitem__) for s in scored]
    hits = [t == g for t, g in zip(top, gold, strict=True)]
    return {
        **_accuracy(gold, chosen),
        "calibration_error": calibration_error([max(s.values()) for s in scored], hits),
        "abstained": sum(c == config.general_expert != t for c, t in zip(chosen, top, strict=True)),
    }


def bench_routing(
    config: PoolConfig,
    rows: list[dict[str, Any]],
    *,
    folds: int = 5,
    subject_map: dict[str, str] | None = None,
    latency_sample: int = 200,
) -> dict[str, Any]:
    """Routing accuracy per expert, never on a question the router was fitted on, in two settings:

    - `few_shot`: fitted on the pool alone (descriptions, examples, matching written
      examples): what a new user gets;
    - `with_data`: k-fold cross-validation, each fold routed by a model fitted on the pool
      plus the other folds of `rows`.
    Plus the latency of whole `Router.route` calls, the keyword baseline and the stay-margin
    trade-off on a shuffled stream."""
    from ech0_moe.router_fit import FeatureCache

    if folds < 2:
        raise Ech0Error(f"--folds must be at least 2, got {folds}")
    if len(rows) < 2 * folds:
        raise Ech0Error(f"{len(rows)} rows are too few for {folds}-fold cross-validation")
    gold = gold_experts(config, rows, subject_map)
    questions = [r["question"] for r in rows]
    features = FeatureCache()
    vectors = features.features(questions)
    t0 = time.perf_counter()
    few = _evaluate(config, _scores(fit_model(config, features=features), vectors), gold)
    fit_seconds = time.perf_counter() - t0
    fold = fold_of(gold, folds)
    scored: list[dict[str, float]] = [{} for _ in rows]
    for f in tqdm(range(folds), desc="fit folds", unit="fold", file=sys.stderr, leave=False):
        train = [i for i in range(len(rows)) if fold[i] != f]
        held = [i for i in range(len(rows)) if fold[i] == f]
        data = [(questions[i], gold[i]) for i in train]
        model = fit_model(config, data, features=features, data_vectors=vectors[train])
        for i, s in zip(held, _scores(model, vectors[held]), strict=True):
            scored[i] = s
    with_data = _evaluate(config, scored, gold)
    router = Router(config, model=model)
    sample = questions[: max(1, latency_sample)]
    _, _, seconds = _route_all(router, sample, "route latency")
    keyword = Router(config, keyword_only=True)
    _, kw_chosen, kw_seconds = _route_all(keyword, questions, "keyword")
    return {
        "router": router.method,
        "experts": len(config.experts),
        "n": len(rows),
        "few_shot": {"protocol": "fitted on the pool's descriptions and examples only", **few},
        "with_data": {"protocol": f"{folds}-fold cross-validation: the pool plus the other folds", **with_data},
        "fit_seconds": round(fit_seconds, 3),
        "median_ms": _median_ms(seconds),
        "p95_ms": round(float(np.percentile(seconds, 95)) * 1000, 3),
        "min_confidence": config.confidence_floor,
        "keyword_baseline": {**_accuracy(gold, kw_chosen), "median_ms": _median_ms(kw_seconds)},
        "swap_tradeoff": swap_tradeoff(router, scored, gold),
    }


def latency(seconds: Sequence[float]) -> dict[str, float]:
    """p50 and p95 of per-question seconds (the benchmarks' common figures)."""
    ordered = sorted(seconds)
    if not ordered:
        return {"p50_seconds": 0.0, "p95_seconds": 0.0}
    p95 = ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]
    return {"p50_seconds": round(statistics.median(ordered), 3), "p95_seconds": round(p95, 3)}


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


def rag_rows(rows: list[dict[str, Any]], folder: Path, source: str = "data") -> list[dict[str, Any]]:
    """Rows of `{question, answers (or answer), passages}` as benchmark rows; their passages
    (each once) become text files in `folder`, to be ingested like any document."""
    out = []
    passages: dict[str, Path] = {}
    folder.mkdir(parents=True, exist_ok=True)
    for n, row in enumerate(rows, 1):
        answers = row.get("answers") or ([row["answer"]] if isinstance(row.get("answer"), str) else [])
        if not isinstance(row.get("question"), str) or not answers or not all(isinstance(a, str) for a in answers):
            raise Ech0Error(f"{source}: row {n}: needs a 'question' and 'answers' (strings)")
        for text in row.get("passages") or []:
            if isinstance(text, str) and text.strip() and text not in passages:
                passages[text] = folder / f"passage-{len(passages):05d}.txt"
                passages[text].write_text(text, encoding="utf-8")
        out.append({"question": row["question"], "answers": answers, "paraphrase": row.get("paraphrase", "")})
    return out


def _pad(kb: Any, n: int, seed: int = 0) -> None:
    """Add `n` filler chunks (shuffled words of the stored documents, random unit vectors) so
    search time is measured at that size; fillers never hold an answer's exact wording."""
    rng = np.random.default_rng(seed)
    words = " ".join(kb.col.get(limit=200, include=["documents"])["documents"] or ["filler"]).split()
    for start in tqdm(range(0, n, 500), desc="pad", unit="x500", file=sys.stderr, leave=False):
        size = min(500, n - start)
        vectors = rng.normal(size=(size, 384)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        texts = [" ".join(rng.choice(words, 60)) for _ in range(size)]
        ids = [f"pad-{start + i}" for i in range(size)]
        kb.upsert(ids, texts, [{"kind": "document", "source": "pad", "domain": ""}] * size, embeddings=vectors)


def bench_rag(
    rows: list[dict[str, Any]],
    kb_dir: Path,
    k: int = 4,
    max_distance: float = 0.65,
    docs: Path = BENCH_DIR / "docs",
    pad: int = 0,
) -> dict[str, Any]:
    """Retrieval quality on a fresh knowledge base in `kb_dir` holding `docs` (+ `pad` fillers):
    for dense, lexical and fused search, is a chunk holding the answer retrieved (recall@1,
    recall@k, MRR, median ms) for the questions and their paraphrases; then learned answers
    (after learning each question, does its paraphrase bring the learned entry back?), measured
    after the document figures so learned entries never count as documents."""
    from ech0_moe.kb import SEARCH_METHODS, KnowledgeBase

    kb = KnowledgeBase(kb_dir)
    t0 = time.perf_counter()
    ingested = kb.add_paths([docs], progress=False)
    ingest_seconds = time.perf_counter() - t0
    if pad:
        _pad(kb, pad)

    def holds_answer(r: dict[str, Any]) -> Callable[[Any], bool]:
        answers = [_norm(a).lower() for a in r.get("answers") or [r["answer"]]]
        return lambda c: any(a in _norm(c.text).lower() for a in answers)

    out: dict[str, Any] = {
        "n": len(rows),
        "k": k,
        "max_distance": max_distance,
        "chunks": kb.stats()["by_kind"].get("document", 0),
        "ingest_chunks_per_second": round(ingested["chunks"] / ingest_seconds, 1),
        "documents": {},
    }
    questions = [("original", "question"), ("paraphrase", "paraphrase")]
    for method in SEARCH_METHODS:
        times: list[float] = []
        figures: dict[str, Any] = {}
        for label, key in questions:
            asked = [r for r in rows if r.get(key)]
            ranks = []
            for r in tqdm(asked, desc=f"rag {method} {label}", unit="q", file=sys.stderr, leave=False):
                t1 = time.perf_counter()
                hits = kb.search(r[key], k=k, max_distance=max_distance, kind="document", method=method)
                times.append(time.perf_counter() - t1)
                ranks.append(_rank(hits, holds_answer(r)))
            if ranks:
                figures[label] = _recall(ranks, k)
        figures["median_search_ms"] = round(statistics.median(times) * 1000, 3)
        out["documents"][method] = figures
    learned_ids = {}
    for r in tqdm(rows, desc="learn", unit="q", file=sys.stderr, leave=False):
        answer = (r.get("answers") or [r.get("answer")])[0]
        learned_ids[r["question"]] = kb.learn(
            r["question"], f"The answer is {answer}.", expert="general", domain="general", mode="bench"
        )
    asked = [r for r in rows if r.get("paraphrase")]
    learned = [
        _rank(
            kb.search(r["paraphrase"], k=k, max_distance=max_distance),
            lambda c, r=r: c.id == learned_ids[r["question"]],
        )
        for r in asked
    ]
    if learned:
        out["learned_paraphrase"] = _recall(learned, k)
    return out


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
