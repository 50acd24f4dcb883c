"""`ech0-moe bench ray`: a `backend: ray` pool on its cluster, each run on fresh replicas.

- `stream_shuffled`: one question at a time in arrival order (one client, no batching);
- `burst_ray_defaults`: every question at once from concurrent clients, with Ray Serve's
  default `max_ongoing_requests` (5): the cold-burst behaviour of plain multiplexing;
- `burst`: the same burst with the pool's own `ray:` settings;
- `affinity_batched`: the questions as one `batch` (grouped by expert, one group per replica).

Each reports loads (a replica loaded an expert), swaps (a load that evicted another expert),
p50/p95 seconds per question (the graph's own node timings) and questions per minute.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any

from tqdm import tqdm

from ech0_moe.batch import solve_batch
from ech0_moe.bench.common import latency
from ech0_moe.config import PoolConfig, load_pool
from ech0_moe.errors import Ech0Error
from ech0_moe.graph import Context, build_graph, result_of
from ech0_moe.memory.kb import KnowledgeBase
from ech0_moe.routing.router import Router
from ech0_moe.services import Services
from ech0_moe.serving.admin import deploy
from ech0_moe.serving.pool import RayPool

RAY_DEFAULT_MAX_ONGOING = 5  # ray.serve's DEFAULT_MAX_ONGOING_REQUESTS


def mixed_questions(config: PoolConfig, n: int, seed: int = 0) -> list[str]:
    """`n` questions spread evenly over the pool's experts (their own examples), shuffled."""
    pools = [e.examples or (e.description,) for e in config.experts]
    questions = []
    for i in range(n):
        own = pools[i % len(pools)]
        questions.append(own[(i // len(pools)) % len(own)])
    random.Random(seed).shuffle(questions)
    return questions


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
        raise Ech0Error("bench ray needs a pool with backend: ray (e.g. --experts examples/ray-pool.yaml)")
    router = Router(config)
    asked = mixed_questions(config, questions, seed)
    runs: dict[str, tuple[PoolConfig, Callable[[Services], list[dict[str, Any]]]]] = {}

    def one_by_one(svc: Services) -> list[dict[str, Any]]:
        graph = build_graph(services=svc)
        return [result_of(graph.invoke({"query": q, "mode": "basic"}, context=context)) for q in asked]

    def burst(svc: Services) -> list[dict[str, Any]]:
        graph = build_graph(services=svc)
        with ThreadPoolExecutor(len(asked)) as clients:
            futures = [clients.submit(graph.invoke, {"query": q, "mode": "basic"}, context=context) for q in asked]
            return [result_of(f.result()) for f in futures]

    def batched(svc: Services) -> list[dict[str, Any]]:
        return solve_batch(asked, context, svc, mode="basic", progress=False)

    defaults = replace(config, ray=replace(config.ray, max_ongoing_requests=RAY_DEFAULT_MAX_ONGOING))
    runs["stream_shuffled"] = (config, one_by_one)
    runs["burst_ray_defaults"] = (defaults, burst)
    runs["burst"] = (config, burst)
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
    parser.add_argument("--max-tokens", dest="max_tokens", type=int, metavar="N", help="answer length cap in tokens")


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Loads, swaps and latency of a `backend: ray` pool: one by one, bursts and an affinity batch."""
    ctx = Context.of(**vars(args))
    return bench_ray(load_pool(ctx.experts_file), ctx, questions=args.questions)
