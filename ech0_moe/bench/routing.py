"""`ech0-moe bench routing`: routing accuracy per expert on questions the router never saw, in
three settings (the pool alone, with our written examples, with labelled data), beside plain
baselines on the same features and rows, with calibration, latency and the keyword baseline."""

from __future__ import annotations

import argparse
import random
import sys
import time
from typing import Any

import numpy as np
from tqdm import tqdm

from ech0_moe import datasets
from ech0_moe.bench.common import accuracy, calibration_error, median_ms
from ech0_moe.bench.peers import SIMILARITIES, peers
from ech0_moe.config import PoolConfig, load_pool
from ech0_moe.datasets import fold_of
from ech0_moe.errors import Ech0Error
from ech0_moe.routing.fit import FeatureCache, fit_model
from ech0_moe.routing.router import Router, decide
from ech0_moe.routing.rows import experts_by_domain, pool_rows, taught_rows, unwritten_domains

STAY_MARGINS = (0.0, 0.05, 0.1, 0.2, 0.3, 0.5)
TAUGHT_PER_DOMAIN = (20, 100, 500)  # document chunks per domain in `taught_documents`


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
                min_confidence=router.floor,
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


def _table(
    names: list[str],
    probs: np.ndarray,
    gold: list[str],
    held: np.ndarray,
    general: str = "",
    floor: float = 0.0,
    probabilities: bool = True,
) -> dict[str, Any]:
    """Accuracy (after abstaining below `floor`), on every row and on the held-out half; ECE of the top score."""
    scored = [dict(zip(names, row.tolist(), strict=True)) for row in probs]
    chosen = [decide(s, general=general or names[0], min_confidence=floor)[0] for s in scored]
    top = [names[i] for i in probs.argmax(axis=1)]
    hits = [t == g for t, g in zip(top, gold, strict=True)]
    return {
        **accuracy(gold, chosen),
        "macro_accuracy_held_out_half": accuracy(
            [g for g, h in zip(gold, held, strict=True) if h], [c for c, h in zip(chosen, held, strict=True) if h]
        )["macro_accuracy"],
        # a probability's calibration; semantic-router's rule scores similarities, which have none
        "calibration_error": calibration_error(probs.max(axis=1).tolist(), hits) if probabilities else None,
        "abstained": sum(c == general != t for c, t in zip(chosen, top, strict=True)),
    }


def _setting(
    config: PoolConfig, protocol: str, ours: np.ndarray, floor: float, theirs: dict[str, np.ndarray], gold, held
) -> dict[str, Any]:
    names = config.names
    row = {
        "protocol": protocol,
        "router": {
            **_table(names, ours, gold, held, config.general_expert, floor),
            "floor": floor,
            "macro_accuracy_without_floor": _table(names, ours, gold, held)["macro_accuracy"],
        },
        **{name: _table(names, p, gold, held, probabilities=name not in SIMILARITIES) for name, p in theirs.items()},
    }
    best = max(theirs, key=lambda n: row[n]["macro_accuracy"])
    row["best_baseline"] = best
    row["router_minus_best_baseline"] = round(row["router"]["macro_accuracy"] - row[best]["macro_accuracy"], 4)
    return row


def taught_documents(
    config: PoolConfig, rows: list[dict[str, Any]], gold: list[str], held: np.ndarray, features: FeatureCache
) -> dict[str, Any]:
    """What documents added with a domain (`kb add --domain`) add to the few-shot router: N chunks
    per domain taught on top of the pool and our written examples, scored on the held-out half.
    Stand-in chunks: the other half's questions with their choices (no corpus of real documents
    per domain ships), so N stops at what that half holds per expert (`chunks_per_domain`: the
    counts taught)."""
    domain = {e.name: e.domain for e in config.experts}
    own: dict[str, list[int]] = {}
    for i in np.flatnonzero(~held):
        own.setdefault(gold[i], []).append(int(i))
    test = np.flatnonzero(held)
    vectors = features.features([rows[i]["question"] for i in test])
    out: dict[str, Any] = {"chunks": "question and choices of the half not held out (stand-ins)"}
    for n in TAUGHT_PER_DOMAIN:
        docs = [
            {"text": " ".join([rows[i]["question"], *map(str, rows[i].get("choices", []))]), "domain": domain[gold[i]]}
            for picked in own.values()
            for i in picked[:n]
        ]
        model = fit_model(config, features=features, taught=taught_rows(config, docs))
        table = _table(config.names, model.proba(vectors), [gold[i] for i in test], np.ones(len(test), bool))
        out[str(n)] = {
            "chunks_per_domain": sorted({min(n, len(v)) for v in own.values()}),
            "macro_accuracy_held_out_half": table["macro_accuracy"],
        }
    return out


def bench_routing(
    config: PoolConfig,
    rows: list[dict[str, Any]],
    *,
    folds: int = 5,
    subject_map: dict[str, str] | None = None,
    latency_sample: int = 200,
) -> dict[str, Any]:
    """Routing accuracy per expert, never on a question the router was fitted on, beside the plain
    baselines on the same features and rows (`peers`), in three settings:

    - `pool_only`: the pool's descriptions, their topics and examples (a user's new domain);
    - `pool_and_written`: plus our written examples of the pool's domains;
    - `taught_documents`: pool and written examples plus N document chunks per domain (`taught_documents`);
    - `with_data`: k-fold cross-validation, each fold fitted on the pool plus the other folds.
    Few-shot figures are given on every row and on the half the few-shot recipe was not chosen
    on (`macro_accuracy_held_out_half`). Plus the latency of whole `Router.route` calls, the
    keyword baseline and the stay-margin trade-off on a shuffled stream."""
    if folds < 2:
        raise Ech0Error(f"--folds must be at least 2, got {folds}")
    if len(rows) < 2 * folds:
        raise Ech0Error(f"{len(rows)} rows are too few for {folds}-fold cross-validation")
    gold = gold_experts(config, rows, subject_map)
    questions = [r["question"] for r in rows]
    names = config.names
    features = FeatureCache()
    vectors = features.features(questions)
    held = np.array(fold_of(gold, 2)) == 1
    out: dict[str, Any] = {"router": "", "experts": len(names), "n": len(rows)}
    for name, written in (("pool_only", False), ("pool_and_written", True)):
        own = pool_rows(config, written)
        t0 = time.perf_counter()
        model = fit_model(config, features=features, written=written)
        out[f"{name}_fit_seconds"] = round(time.perf_counter() - t0, 3)
        theirs = peers(features.features([t for t, _ in own]), [e for _, e in own], names, vectors)
        protocol = f"fitted on {len(own)} texts of the pool" + (" and our written examples" if written else "")
        if written and (missing := unwritten_domains(config)):  # the per-source effect: none here
            protocol += f" (none used: we wrote none for {', '.join(missing)})"
        out[name] = _setting(config, protocol, model.proba(vectors), model.floor, theirs, gold, held)
    out["taught_documents"] = taught_documents(config, rows, gold, held, features)
    fold = fold_of(gold, folds)
    ours = np.zeros((len(rows), len(names)))
    theirs = {}
    floors = []
    own = pool_rows(config)
    own_vectors = features.features([t for t, _ in own])
    for f in tqdm(range(folds), desc="fit folds", unit="fold", file=sys.stderr, leave=False):
        train = [i for i in range(len(rows)) if fold[i] != f]
        test = [i for i in range(len(rows)) if fold[i] == f]
        data = [(questions[i], gold[i]) for i in train]
        model = fit_model(config, data, features=features, data_vectors=vectors[train])
        ours[test] = model.proba(vectors[test])
        floors.append(model.floor)
        part = peers(
            np.vstack([own_vectors, vectors[train]]),
            [e for _, e in own] + [gold[i] for i in train],
            names,
            vectors[test],
        )
        for name, p in part.items():
            theirs.setdefault(name, np.zeros((len(rows), len(names))))[test] = p
    floor = float(np.median(floors))
    protocol = f"{folds}-fold cross-validation: the pool and our written examples plus the other folds"
    out["with_data"] = _setting(config, protocol, ours, floor, theirs, gold, np.ones(len(rows), bool))
    out["with_data"]["router"]["floor_per_fold"] = floors
    router = Router(config, model=model)
    out["router"] = router.method
    _, _, seconds = _route_all(router, questions[: max(1, latency_sample)], "route latency")
    keyword = Router(config, keyword_only=True)
    _, kw_chosen, kw_seconds = _route_all(keyword, questions, "keyword")
    scored = [dict(zip(names, row.tolist(), strict=True)) for row in ours]
    return {
        **out,
        "median_ms": median_ms(seconds),
        "p95_ms": round(float(np.percentile(seconds, 95)) * 1000, 3),
        "keyword_baseline": {**accuracy(gold, kw_chosen), "median_ms": median_ms(kw_seconds)},
        "swap_tradeoff": swap_tradeoff(router, scored, gold),
    }


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data",
        metavar="FILE",
        default=str(datasets.ROUTING_DEV),
        help="JSONL with 'question' and 'expert' or 'domain' (or 'subject') per line "
        "(default: the shipped MMLU dev set, benchmarks/routing-dev.jsonl)",
    )
    parser.add_argument("--map", metavar="FILE", help="YAML mapping each row's 'subject' to an expert")
    parser.add_argument(
        "--synthetic", type=int, metavar="N", help="a synthetic pool of N experts, one per 'subject' plus decoys"
    )
    parser.add_argument(
        "--folds", type=int, default=5, metavar="N", help="cross-validation folds with data (default 5)"
    )


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Routing accuracy, calibration and latency, few-shot and with data."""
    rows = datasets.load_jsonl(args.data, ("question",))
    config = load_pool(args.experts_file or "")
    subject_map = datasets.load_mapping(args.map) if args.map else None
    if args.synthetic:
        config, subject_map = subject_pool(config, rows, args.synthetic)
    return bench_routing(config, rows, folds=args.folds, subject_map=subject_map)
