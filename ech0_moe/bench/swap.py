"""`ech0-moe bench swap`: swap costs on the configured pool, driving the real graph (on top of `batch`)."""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
from dataclasses import replace
from typing import Any

from tqdm import tqdm

from ech0_moe.batch import solve_batch
from ech0_moe.bench.common import burst, counts_arg, max_latency
from ech0_moe.graph import Context, build_graph
from ech0_moe.services import Services, process_registry
from ech0_moe.serving.local.pool import ExpertPool

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


def _rss_bytes() -> int:
    """This process's resident memory now (Linux /proc)."""
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _peak_rss_bytes() -> int:
    """This process's peak resident memory (kilobytes in getrusage on Linux)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


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


def _load_costs(pool: ExpertPool, expert: str) -> dict[str, Any]:
    """Cold and warm: read bandwidth bound vs load (+ first token, which touches the mmapped weights)."""
    spec = pool.specs[expert]
    file_bytes = os.path.getsize(spec.model)
    row: dict[str, Any] = {
        "expert": expert,
        "file": os.path.basename(spec.model),
        "file_bytes": file_bytes,
        "loaded_bytes": spec.size_bytes,  # the books: file + KV cache + compute buffer
    }
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
            "bandwidth_mb_s": round(file_bytes / read / 1e6, 1),
            "load_seconds": round(acquired.load_seconds, 4),
            "load_and_first_token_seconds": round(ready, 4),
            "vs_bandwidth_bound": round(ready / read, 2),
        }
    return row


def spread_experts(pool: ExpertPool, count: int) -> list[str]:
    """`count` of the pool's experts, taken from its weights files in turn (so a burst over them
    needs every file)."""
    by_file: dict[str, list[str]] = {}
    for name, spec in pool.specs.items():
        by_file.setdefault(spec.model_key, []).append(name)
    files = list(by_file.values())
    order = [names[i] for i in range(max(map(len, files))) for names in files if i < len(names)]
    return order[:count]


def concurrent_bursts(
    context: Context, svc: Services, clients: tuple[int, ...], experts: tuple[int, ...]
) -> list[dict[str, Any]]:
    """Cold bursts of concurrent invokes on the embedded pool: client i asks expert i mod K (of
    `spread_experts`). Loads (swaps), and seconds from the start of the burst to each answer."""
    pool = svc.pool
    assert isinstance(pool, ExpertPool)
    graph = build_graph(services=svc)
    rows = []
    for k in experts:
        names = spread_experts(pool, k)
        for n in clients:
            pool.unload_all()
            before = pool.swaps

            def ask(i: int, names: list[str] = names) -> dict[str, Any]:
                question, expert = SWAP_QUESTIONS[i % len(SWAP_QUESTIONS)], names[i % len(names)]
                return graph.invoke({"query": question, "mode": "basic", "expert": expert}, context=context)

            results, seconds, wall = burst(ask, n)
            files = len({pool.specs[e].model_key for e in names})
            loads = pool.swaps - before
            rows.append(
                {
                    "clients": n,
                    "experts": len(names),
                    "weights_files": files,
                    "errors": sum(bool(r["error"]) for r in results),
                    "loads": loads,
                    **max_latency(seconds),
                    "questions_per_minute": round(60 * n / wall, 1),
                    "load_bound": files + pool.lanes - 1 + 2,
                    "within_load_bound": loads <= files + pool.lanes - 1 + 2,
                }
            )
    return rows


def bench_swap(
    context: Context, svc: Services, repeats: int = 5, bursts: tuple[tuple[int, ...], ...] = ()
) -> dict[str, Any]:
    """Swap costs on `svc`'s pool (runs the real models): see `ech0-moe bench swap`."""
    pool = svc.pool
    graph = build_graph(services=svc)
    svc.router.route("warm up")  # the router's encoder, Chroma and the document encoder are the
    svc.kb.search("warm up")  # baseline: the growth after this is the models'
    rss_before = _rss_bytes()
    files: dict[str, str] = {}
    for name, spec in pool.specs.items():
        if spec.runtime == "llamacpp":
            files.setdefault(spec.model_key, name)
    loads = [_load_costs(pool, name) for name in tqdm(files.values(), desc="load costs", file=sys.stderr)]

    questions = list(SWAP_QUESTIONS)
    random.Random(7).shuffle(questions)
    batches = {}
    for order in ("fifo", "affinity"):
        pool.unload_all()
        before, t0 = pool.swaps, time.perf_counter()
        solve_batch(questions, context, svc, mode="basic", order=order, progress=False)
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
        # the books beside the process: peak resident memory above what it held before any model
        "peak_rss_growth_bytes": _peak_rss_bytes() - rss_before,
        "load": loads,
        "batch": batches,
        "graph_overhead": {
            "direct_seconds": round(statistics.median(direct), 4),
            "graph_seconds": round(statistics.median(via_graph), 4),
            "overhead": round(overhead, 4),
            "max_tokens": tokens,
        },
        "prefetch": prefetch,
        "concurrent": concurrent_bursts(context, svc, *bursts) if bursts else [],
    }


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--max-tokens", dest="max_tokens", type=int, metavar="N", help="answer length cap in tokens")
    parser.add_argument(
        "--clients", type=counts_arg, default=(32, 128), metavar="N,N", help="clients per burst (default 32,128)"
    )
    parser.add_argument(
        "--burst-experts", type=counts_arg, default=(4, 8), metavar="K,K", help="experts per burst (default 4,8)"
    )
    parser.add_argument("--no-bursts", action="store_true", help="skip the concurrent bursts")


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Load and swap costs on the configured pool, driving the real graph."""
    ctx = Context.of(**vars(args))
    bursts = () if args.no_bursts else (args.clients, args.burst_experts)
    return bench_swap(ctx, process_registry().for_run(ctx.experts_file, ctx.kb_dir), bursts=bursts)
