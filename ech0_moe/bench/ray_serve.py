"""`ech0-moe bench ray`: a `backend: ray` pool on its cluster, each run on fresh replicas.

- `stream_shuffled`: one question at a time in arrival order (one client, no batching);
- `affinity_batched`: the questions as one `batch` (grouped by expert, one group per replica).

Each reports loads (a replica loaded an expert), swaps (a load that evicted another expert),
p50/p95 seconds per question (the graph's own node timings) and questions per minute.

`bursts`: cold bursts of N concurrent clients over K experts (the pool's experts, then copies
under new names), each on fresh replicas twice: with Ray Serve's defaults (its multiplexing
alone, `max_ongoing_requests` 5) and with the dispatcher grouping requests by expert
(`ray.fairness`). Seconds per question here run from the start of the burst to its answer.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from tqdm import tqdm

from ech0_moe.batch import solve_batch
from ech0_moe.bench.common import burst, counts_arg, latency, max_latency
from ech0_moe.config import PoolConfig, load_pool
from ech0_moe.config.schema import RAY_BOUNDS
from ech0_moe.errors import Ech0Error
from ech0_moe.graph import Context, build_graph, result_of
from ech0_moe.memory.kb import KnowledgeBase
from ech0_moe.routing.router import Router
from ech0_moe.services import Services
from ech0_moe.serving.ray_serve.admin import deploy, dispatch_stats
from ech0_moe.serving.ray_serve.pool import RayPool

RAY_DEFAULT_MAX_ONGOING = 5  # ray.serve's DEFAULT_MAX_ONGOING_REQUESTS
# the largest burst again with a tight and a loose bound: what each side of the trade costs
OTHER_FAIRNESS_S = (5.0, 600.0)


def mixed_questions(config: PoolConfig, n: int, seed: int = 0) -> list[str]:
    """`n` questions spread evenly over the pool's experts (their own examples), shuffled."""
    pools = [e.examples or (e.description,) for e in config.experts]
    questions = []
    for i in range(n):
        own = pools[i % len(pools)]
        questions.append(own[(i // len(pools)) % len(own)])
    random.Random(seed).shuffle(questions)
    return questions


def widened(config: PoolConfig, count: int) -> PoolConfig:
    """`config` with `count` experts: its own, then copies of them under new names (a replica
    holds one expert name at a time, so each copy is a load of its own)."""
    base = config.experts
    experts = [
        base[i] if i < len(base) else replace(base[i % len(base)], name=f"{base[i % len(base)].name}-{i // len(base)}")
        for i in range(count)
    ]
    return replace(config, experts=tuple(experts))


def cold_burst(config: PoolConfig, context: Context, router: Router, clients: int) -> dict[str, Any]:
    """One cold burst on fresh replicas: client i asks expert i mod K one of its own examples."""
    deploy(config, fresh=True)
    svc = Services.create(config, kb=lambda: KnowledgeBase(context.kb_dir), router=router)
    assert isinstance(svc.pool, RayPool)
    graph = build_graph(services=svc)
    experts = [e.name for e in config.experts]

    def ask(i: int) -> dict[str, Any]:
        spec = config.experts[i % len(experts)]
        question = (spec.examples or (spec.description,))[i // len(experts) % len(spec.examples or (1,))]
        return result_of(graph.invoke({"query": question, "mode": "basic", "expert": spec.name}, context=context))

    results, seconds, wall = burst(ask, clients)
    out = {
        "errors": sum(bool(r["error"]) for r in results),
        "loads": svc.pool.swaps,
        "swaps": sum(bool(e.evicted) for e in svc.pool.events),
        **max_latency(seconds),
        "questions_per_minute": round(60 * clients / wall, 1),
    }
    record = dispatch_stats(config.ray_settings())
    if record:
        keys = ("max_queued_s", "max_unserved_s", "max_service_s", "forced_switches")
        out["dispatcher"] = {k: record[k] for k in keys}
    return out


def goals(run: dict[str, Any], ray_defaults: dict[str, Any], bound: int, fairness: float) -> dict[str, bool]:
    """The three goals of a grouped burst: loads within the bound, p95 no worse than Ray's
    defaults, and no expert unserved past the fairness bound plus one answer (or load) in flight."""
    seen = run.get("dispatcher", {})
    return {
        "within_load_bound": run["loads"] <= bound,
        "p95_no_worse": run["p95_seconds"] <= ray_defaults["p95_seconds"],
        "unserved_within_fairness_plus_one_answer": seen.get("max_unserved_s", 0.0)
        <= fairness + seen.get("max_service_s", 0.0) + 0.1,
    }


def bench_bursts(
    config: PoolConfig,
    context: Context,
    clients: tuple[int, ...],
    experts: tuple[int, ...],
    progress: bool = True,
    other_fairness: tuple[float, ...] = OTHER_FAIRNESS_S,
) -> dict[str, Any]:
    """`bursts` of the module docstring: ours beside Ray's defaults, for every clients x experts."""
    assert config.ray is not None
    router = Router(config)
    defaults = replace(config.ray, max_ongoing_requests=RAY_DEFAULT_MAX_ONGOING, fairness=0.0)
    rows = []
    plan = [(n, k) for k in experts for n in clients]
    for n, k in tqdm(plan, desc="bench ray bursts", unit="burst", file=sys.stderr, disable=not progress):
        wide = widened(config, k)
        ray_defaults = cold_burst(replace(wide, ray=defaults), context, router, n)
        bound = k + config.ray.replicas - 1 + 2
        ours = cold_burst(wide, context, router, n)
        rows.append({"clients": n, "experts": k, "ray_defaults": ray_defaults, "load_bound": bound})
        rows[-1]["grouped"] = {**ours, **goals(ours, ray_defaults, bound, config.ray.fairness)}
    if rows:  # the largest burst again with other bounds: fewer long waits or fewer loads
        n, k = max(clients), max(experts)
        big = next(r for r in rows if r["clients"] == n and r["experts"] == k)
        for fairness in other_fairness:
            other = replace(widened(config, k), ray=replace(config.ray, fairness=fairness))
            run = cold_burst(other, context, router, n)
            big[f"grouped_fairness_{fairness:g}s"] = {
                **run,
                **goals(run, big["ray_defaults"], big["load_bound"], fairness),
            }
    deploy(config, fresh=True)
    return {"replicas": config.ray.replicas, "fairness_s": config.ray.fairness, "bursts": rows}


def _summary(results: list[dict[str, Any]], pool: RayPool, wall: float) -> dict[str, Any]:
    seconds = [sum(r["timings"].values()) for r in results]
    return {
        "questions": len(results),
        "errors": sum(bool(r["error"]) for r in results),
        "distinct_experts": len({r["expert_used"] for r in results}),
        "loads": pool.swaps,
        "swaps": sum(bool(e.evicted) for e in pool.events),
        "replicas_used": len({r["served_by"] for r in results if r["served_by"]}),
        **latency(seconds),
        "wall_seconds": round(wall, 2),
        "questions_per_minute": round(60 * len(results) / wall, 1) if wall else 0.0,
    }


def bench_ray(
    config: PoolConfig, context: Context, *, questions: int = 32, seed: int = 0, progress: bool = True
) -> dict[str, Any]:
    """Every run of the module docstring on fresh replicas of `config`'s Serve application."""
    if config.ray is None:
        raise Ech0Error("bench ray needs a pool with placement: ray (e.g. --experts examples/ray-pool.yaml)")
    router = Router(config)
    asked = mixed_questions(config, questions, seed)
    runs: dict[str, tuple[PoolConfig, Callable[[Services], list[dict[str, Any]]]]] = {}

    def one_by_one(svc: Services) -> list[dict[str, Any]]:
        graph = build_graph(services=svc)
        return [result_of(graph.invoke({"query": q, "mode": "basic"}, context=context)) for q in asked]

    def batched(svc: Services) -> list[dict[str, Any]]:
        return solve_batch(asked, context, svc, mode="basic", progress=False)

    runs["stream_shuffled"] = (config, one_by_one)
    runs["affinity_batched"] = (config, batched)
    out: dict[str, Any] = {
        "replicas": config.ray.replicas,
        "experts": len(config.experts),
        "questions": len(asked),
        "max_ongoing_requests": config.ray.max_ongoing_requests,
        "ray_default_max_ongoing_requests": RAY_DEFAULT_MAX_ONGOING,
    }
    bar = tqdm(runs.items(), desc="bench ray", unit="run", file=sys.stderr, disable=not progress)
    for name, (run_config, run) in bar:
        bar.set_postfix_str(name)
        deploy(run_config, fresh=True)  # cold: new replicas, nothing resident, nothing routed yet
        svc = Services.create(run_config, kb=lambda: KnowledgeBase(context.kb_dir), router=router)  # basic: unused
        assert isinstance(svc.pool, RayPool)
        t0 = time.perf_counter()
        results = run(svc)
        out[name] = _summary(results, svc.pool, time.perf_counter() - t0)
    deploy(config, fresh=True)  # leave the application as configured
    bound = out["affinity_batched"]["distinct_experts"] + config.ray.replicas - 1
    out["cold_burst_load_bound"] = bound
    out["affinity_batched_within_bound"] = out["affinity_batched"]["loads"] <= bound
    return out


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--questions", type=int, default=32, metavar="N", help="mixed questions per run (default 32)")
    parser.add_argument(
        "--clients", type=counts_arg, default=(32, 128), metavar="N,N", help="clients per burst (default 32,128)"
    )
    parser.add_argument(
        "--burst-experts", type=counts_arg, default=(4, 8), metavar="K,K", help="experts per burst (default 4,8)"
    )
    parser.add_argument("--no-bursts", action="store_true", help="skip the cold bursts")
    parser.add_argument(
        "--fairness",
        type=float,
        metavar="S",
        help="the bursts' fairness bound, seconds (default: ray.fairness)",
    )
    parser.add_argument(
        "--no-other-fairness", action="store_true", help="skip the largest burst's runs at 5 s and 600 s"
    )
    parser.add_argument("--max-tokens", dest="max_tokens", type=int, metavar="N", help="answer length cap in tokens")


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Loads, swaps and latency of a `backend: ray` pool: one by one, bursts and an affinity batch."""
    low, high = RAY_BOUNDS["fairness"]
    if args.fairness is not None and not low <= args.fairness <= high:
        raise Ech0Error(f"--fairness must be between {low:g} and {high:g} seconds, got {args.fairness:g}")
    ctx = Context.of(**vars(args))
    config = load_pool(ctx.experts_file)
    out = bench_ray(config, ctx, questions=args.questions)
    if not args.no_bursts:
        if args.fairness is not None:
            config = replace(config, ray=replace(config.ray, fairness=args.fairness))
        others = () if args.no_other_fairness else OTHER_FAIRNESS_S
        out["bursts"] = bench_bursts(config, ctx, args.clients, args.burst_experts, other_fairness=others)
    return out
