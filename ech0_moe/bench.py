"""Benchmarks behind `ech0-moe bench ...`: each returns a JSON-able dict."""

from __future__ import annotations

import json
import os
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
from ech0_moe.errors import Ech0Error
from ech0_moe.router import Router, decide, fit_model, question_id

STAY_MARGINS = (0.0, 0.05, 0.1, 0.2, 0.3, 0.5)


def load_jsonl(path: str | Path, required: Sequence[str]) -> list[dict[str, Any]]:
    """Read a JSONL file; a bad line is one error naming the file and line."""
    p = Path(path)
    if not p.is_file():
        raise Ech0Error(f"data file not found: {p}")
    rows = []
    for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise Ech0Error(f"{p}:{n}: not JSON ({exc.msg})") from None
        missing = [k for k in required if not isinstance(row, dict) or k not in row]
        if missing:
            raise Ech0Error(f"{p}:{n}: missing field {missing[0]!r}")
        rows.append(row)
    if not rows:
        raise Ech0Error(f"{p}: no rows")
    return rows


def _shuffled_by_domain(rows: list[dict[str, Any]], seed: int) -> list[list[int]]:
    """Row indices grouped by domain (domains in name order), each group shuffled with `seed`."""
    by_domain: dict[str, list[int]] = defaultdict(list)
    for i, r in enumerate(rows):
        by_domain[r["domain"]].append(i)
    rng = random.Random(seed)
    groups = []
    for domain in sorted(by_domain):
        items = by_domain[domain]
        rng.shuffle(items)
        groups.append(items)
    return groups


def split_dev(rows: list[dict[str, Any]], fraction: float, seed: int) -> tuple[list[dict], list[dict]]:
    """Stratified split by domain: (fit part, held-out part)."""
    fit, held = [], []
    for items in _shuffled_by_domain(rows, seed):
        cut = round(len(items) * fraction)
        fit += [rows[i] for i in items[:cut]]
        held += [rows[i] for i in items[cut:]]
    return fit, held


def fold_of(rows: list[dict[str, Any]], folds: int, seed: int = 0) -> list[int]:
    """Stratified k-fold assignment: fold number of each row, domains spread evenly."""
    fold = [0] * len(rows)
    for items in _shuffled_by_domain(rows, seed):
        for j, i in enumerate(items):
            fold[i] = j % folds
    return fold


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


BENCH_DIR = Path(__file__).resolve().parent.parent / "benchmarks"


def _norm(text: str) -> str:
    return " ".join(text.split())


def load_qa(folder: Path = BENCH_DIR) -> list[dict[str, Any]]:
    """The QA set over real README files: question, verbatim answer span, paraphrase, doc text."""
    rows = load_jsonl(folder / "qa.jsonl", ("doc", "question", "answer", "paraphrase"))
    for r in rows:
        r["text"] = (folder / "docs" / r["doc"]).read_text(encoding="utf-8")
    return rows


def bench_compress(rows: list[dict[str, Any]], compressor: Any, ratios: Sequence[float] = (0.3, 0.4, 0.5)) -> dict:
    """Achieved ratio, key-fact retention and speed of `compressor` on whole documents."""
    from ech0_moe.compressor import is_key_token
    from ech0_moe.text import split_sentences

    out: dict[str, Any] = {"n": len(rows), "ratios": []}
    for ratio in ratios:
        achieved, answers, facts_kept, facts_total, seconds, tokens = [], 0, 0, 0, 0.0, 0
        for r in tqdm(rows, desc=f"compress {ratio}", unit="doc", file=sys.stderr, leave=False):
            c = compressor.compress(r["question"], [r["text"]], ratio=ratio)
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


SWAP_QUESTIONS = (  # our own mixed questions: both weights files of the default pool
    "What is the derivative of x^2?",
    "Which organ pumps blood around the body?",
    "What is the unit of electrical resistance?",
    "Is 'all cats are animals, so all animals are cats' valid?",
    "What is the pH of a neutral solution?",
    "Who wrote the Odyssey?",
    "How fast does light travel in a vacuum?",
    "What does a binary search need from its input?",
    "What do red blood cells carry?",
    "Solve x + 4 = 9.",
    "Which fallacy attacks the person instead of the argument?",
    "What is the capital of Japan?",
)


def _drop_page_cache(path: str) -> None:
    """Evict a file's pages from the OS cache (no root needed), for a cold read or load."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def _read_seconds(path: str) -> float:
    t0 = time.perf_counter()
    with open(path, "rb", buffering=0) as fh:
        while fh.read(8 << 20):
            pass
    return time.perf_counter() - t0


def _load_costs(pool: Any, expert: str) -> dict[str, Any]:
    """Cold and warm: read bandwidth bound vs load (+ first token, which touches the mmapped weights)."""
    spec = pool.specs[expert]
    row: dict[str, Any] = {"expert": expert, "file": os.path.basename(spec.model), "size_bytes": spec.size_bytes}
    for cache in ("cold", "warm"):
        pool.unload_all()
        if cache == "cold":
            _drop_page_cache(spec.model)
        read = _read_seconds(spec.model)
        pool.unload_all()
        if cache == "cold":
            _drop_page_cache(spec.model)
        t0 = time.perf_counter()
        acquired = pool.ensure_loaded(expert)
        pool.chat(expert, [{"role": "user", "content": "Hi"}], max_tokens=1)
        ready = time.perf_counter() - t0
        row[cache] = {
            "read_seconds": round(read, 4),
            "bandwidth_mb_s": round(spec.size_bytes / read / 1e6, 1),
            "load_seconds": round(acquired.load_seconds, 4),
            "load_and_first_token_seconds": round(ready, 4),
            "vs_bandwidth_bound": round(ready / read, 2),
        }
    return row


def bench_swap(context: Any, repeats: int = 5) -> dict[str, Any]:
    """Swap costs on the configured pool (runs the real models): see `ech0-moe bench swap`."""
    from dataclasses import replace

    from ech0_moe.batch import solve_batch
    from graph import build_graph

    svc = context.services()
    pool = svc.pool
    graph = build_graph()
    files: dict[str, str] = {}
    for name, spec in pool.specs.items():
        if spec.backend == "llamacpp":
            files.setdefault(spec.model_key, name)
    loads = [_load_costs(pool, name) for name in tqdm(files.values(), desc="load costs", file=sys.stderr)]

    questions = list(SWAP_QUESTIONS)
    random.Random(7).shuffle(questions)
    batches = {}
    for order in ("fifo", "affinity"):
        pool.unload_all()
        before, t0 = pool.swaps, time.perf_counter()
        solve_batch(graph, questions, context, mode="basic", order=order, progress=False)
        batches[order] = {"swaps": pool.swaps - before, "seconds": round(time.perf_counter() - t0, 3)}
    experts = [svc.router.route(q).expert for q in questions]
    batches["distinct_files"] = len({pool.specs[e].model_key for e in experts})

    # graph overhead in basic mode: same expert, prompt and length, model already resident
    query, expert = "Name three primary colours.", "general"
    messages = [{"role": "system", "content": pool.specs[expert].system_prompt}, {"role": "user", "content": query}]
    tokens = context.max_tokens or 32
    same_length = replace(context, max_tokens=tokens)
    pool.ensure_loaded(expert)
    direct, via_graph = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        pool.chat(expert, messages, tokens)
        direct.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        graph.invoke({"query": query, "mode": "basic", "expert": expert}, context=same_length)
        via_graph.append(time.perf_counter() - t0)
    overhead = statistics.median(via_graph) / statistics.median(direct) - 1

    # prefetch: optimized mode, each query forcing a swap, with and without loading in parallel
    prefetch = {}
    pair = [(q, e) for q, e in zip(questions, experts, strict=True)]
    for flag in (False, True):
        ctx = replace(context, prefetch=flag)
        total = 0.0
        for i in range(repeats):
            q, e = pair[i % len(pair)]
            other = next(n for n, s in pool.specs.items() if s.model_key != pool.specs[e].model_key)
            pool.ensure_loaded(other)  # so answering `q` needs a swap
            t0 = time.perf_counter()
            graph.invoke({"query": q, "mode": "optimized", "expert": e}, context=ctx)
            total += time.perf_counter() - t0
        prefetch["with_prefetch" if flag else "sequential"] = round(total / repeats, 4)
    prefetch["saved_seconds_per_query"] = round(prefetch["sequential"] - prefetch["with_prefetch"], 4)

    stats = pool.stats()
    return {
        "budget_bytes": stats["budget_bytes"],
        "peak_loaded_bytes": stats["peak_loaded_bytes"],
        "within_budget": stats["peak_loaded_bytes"] <= stats["budget_bytes"],
        "load": loads,
        "batch": batches,
        "graph_overhead": {
            "direct_seconds": round(statistics.median(direct), 4),
            "graph_seconds": round(statistics.median(via_graph), 4),
            "overhead": round(overhead, 4),
            "max_tokens": tokens,
        },
        "prefetch": prefetch,
    }
