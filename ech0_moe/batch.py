"""Batches: route every query first, then serve them grouped by weights file (affinity).

A shuffled batch over E distinct model files costs E loads at most (E - 1 if the
first group's file is already resident), instead of up to one load per query
in arrival (FIFO) order. The order is the pool's (`ExpertPool.serving_order`, the
same rule the ensemble's turns follow). Results come back in input order.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any, Literal

from tqdm import tqdm

from ech0_moe.errors import InputError
from ech0_moe.graph import Context, build_graph, result_of
from ech0_moe.services import ServiceProvider, Services
from ech0_moe.text import check_query

Order = Literal["affinity", "fifo"]


def plan(services: Services, queries: Sequence[str], order: Order = "affinity") -> tuple[list[int], list[str]]:
    """(serving order of query indices, chosen expert per query)."""
    if order not in ("affinity", "fifo"):
        raise InputError(f"unknown batch order {order!r}; use affinity or fifo")
    experts = [services.router.route(q).expert for q in queries]
    if order == "fifo":
        return list(range(len(queries))), experts
    return services.pool.serving_order(experts), experts


def solve_batch(
    queries: Sequence[str],
    context: Context,
    services: ServiceProvider,
    *,
    mode: str = "basic",
    order: Order = "affinity",
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Answer `queries` with as few swaps as possible; results in input order."""
    for q in queries:
        check_query(q)
    graph = build_graph(services=services)
    serve, experts = plan(services.for_run(context.experts_file, context.kb_dir), queries, order)
    results: list[dict[str, Any] | None] = [None] * len(queries)
    bar = tqdm(serve, desc=f"batch ({order})", unit="q", file=sys.stderr, disable=not progress)
    for i in bar:
        bar.set_postfix_str(experts[i])
        out = graph.invoke({"query": queries[i], "mode": mode, "expert": experts[i]}, context=context)
        results[i] = {"index": i, "query": queries[i], **result_of(out)}
    return [r for r in results if r is not None]
