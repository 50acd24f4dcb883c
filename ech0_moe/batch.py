"""Batches: route every query first, then serve them grouped by weights file (affinity).

A shuffled batch over E distinct model files costs E loads at most (E - 1 if the
first group's file is already resident), instead of up to one load per query
in arrival (FIFO) order. The order is the pool's (`ExpertPool.serving_order`, the
same rule the ensemble's turns follow). Results come back in input order.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal

from tqdm import tqdm

from ech0_moe.errors import InputError
from ech0_moe.graph import Context, build_graph, result_of
from ech0_moe.owners import LOCAL
from ech0_moe.routing.router import RouteDecision
from ech0_moe.services import ServiceProvider, Services
from ech0_moe.text import check_query

Order = Literal["affinity", "fifo"]


def plan(
    services: Services, queries: Sequence[str], order: Order = "affinity"
) -> tuple[list[int], list[RouteDecision]]:
    """(serving order of query indices, the router's decision per query)."""
    if order not in ("affinity", "fifo"):
        raise InputError(f"unknown batch order {order!r}; use affinity or fifo")
    decisions = [services.router.route(q) for q in queries]
    if order == "fifo":
        return list(range(len(queries))), decisions
    return services.pool.serving_order([d.expert for d in decisions]), decisions


def groups_of(services: Services, serve: list[int], experts: list[str], order: Order) -> list[list[int]]:
    """The serving order cut into groups, one per model (`fifo`: one per query); each group is
    served by one lane, so an expert stays resident while its group is answered."""
    if order == "fifo":
        return [[i] for i in serve]
    groups: list[list[int]] = []
    key = None
    for i in serve:
        spec = services.pool.specs[experts[i]]
        if spec.model_key != key:
            groups.append([])
            key = spec.model_key
        groups[-1].append(i)
    return groups


def solve_batch(
    queries: Sequence[str],
    context: Context,
    services: ServiceProvider,
    *,
    mode: str | Sequence[str] = "basic",
    order: Order = "affinity",
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Answer `queries` with as few swaps as possible; results in input order. `mode`: one for
    every query, or one per query.

    Groups are served by `pool.lanes` lanes at once (1 in process; on Ray Serve one per replica,
    so N replicas keep N experts resident). A lane starts once the previous lane's first expert
    has loaded, and keeps `pool.queue_depth` questions of its group in flight after the first:
    a busy replica never looks idle, so Ray gives the next group's expert to the replica whose
    group just ended (the one with the shortest queue), not to one still working."""
    for q in queries:
        check_query(q)
    graph = build_graph(services=services)
    svc = services.for_run(context.experts_file, context.kb_dir, context.user or LOCAL)
    modes = [mode] * len(queries) if isinstance(mode, str) else list(mode)
    if len(modes) != len(queries):
        raise InputError(f"{len(modes)} modes for {len(queries)} questions")
    serve, decisions = plan(svc, queries, order)
    experts = [d.expert for d in decisions]
    groups = iter(groups_of(svc, serve, experts, order))
    lanes = max(1, min(svc.pool.lanes if order == "affinity" else 1, len(queries)))
    depth = svc.pool.queue_depth if lanes > 1 else 1
    loaded = [threading.Event() for _ in range(lanes)]
    results: list[dict[str, Any] | None] = [None] * len(queries)
    lock = threading.Lock()
    bar = tqdm(total=len(queries), desc=f"batch ({order})", unit="q", file=sys.stderr, disable=not progress)

    def answer(i: int, on_loaded: Callable[[], None]) -> None:
        values: dict[str, Any] = {}
        request = {"query": queries[i], "mode": modes[i], "expert": experts[i]}
        for kind, chunk in graph.stream(request, context=context, stream_mode=["custom", "values"]):
            if kind == "custom" and chunk.get("event") == "loaded":
                on_loaded()
            elif kind == "values":
                values = chunk
        result = result_of(values)
        if result["expert_used"] == experts[i]:  # routed by `plan`, not chosen by the caller: say why
            result["route_reason"] = f"{decisions[i].reason} (routed before the batch was grouped)"
        results[i] = {"index": i, "query": queries[i], **result}
        with lock:
            bar.set_postfix_str(experts[i])
            bar.update()

    def lane(k: int) -> None:
        try:
            if k:
                loaded[k - 1].wait()
            while True:
                with lock:
                    group = next(groups, None)
                if group is None:
                    return
                answer(group[0], loaded[k].set)  # alone: it places (loads) the group's expert
                with ThreadPoolExecutor(depth, thread_name_prefix=f"ech0-lane{k}") as inflight:
                    list(inflight.map(lambda i: answer(i, lambda: None), group[1:]))
        finally:
            loaded[k].set()

    with ThreadPoolExecutor(lanes, thread_name_prefix="ech0-lane") as workers:
        for future in [workers.submit(lane, k) for k in range(lanes)]:
            future.result()
    bar.close()
    return [r for r in results if r is not None]
