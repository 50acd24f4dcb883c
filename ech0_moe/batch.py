"""Batches: route every query first, then serve them grouped by weights file (affinity).

A shuffled batch over E distinct model files costs E loads at most (E - 1 if the
first group's file is already resident), instead of up to one load per query
in arrival (FIFO) order. Results come back in input order.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

from tqdm import tqdm

from ech0_moe.errors import Ech0Error


def plan(services: Any, queries: Sequence[str], order: str = "affinity") -> tuple[list[int], list[str]]:
    """(serving order of query indices, chosen expert per query)."""
    if order not in ("affinity", "fifo"):
        raise Ech0Error(f"unknown batch order {order!r}; use affinity or fifo")
    experts = [services.router.route(q).expert for q in queries]
    if order == "fifo":
        return list(range(len(queries))), experts
    files = [services.pool.specs[e].model_key for e in experts]
    resident = {services.pool.specs[e].model_key for e in services.pool.loaded_experts()}
    first_seen = {f: files.index(f) for f in files}
    serve = sorted(range(len(queries)), key=lambda i: (files[i] not in resident, first_seen[files[i]], i))
    return serve, experts


def solve_batch(
    graph: Any,
    queries: Sequence[str],
    context: Any,
    *,
    mode: str = "basic",
    order: str = "affinity",
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Answer `queries` with as few swaps as possible; results in input order."""
    from ech0_moe.text import check_query
    from graph.state import result_of

    for q in queries:
        check_query(q)
    services = context.services()
    serve, experts = plan(services, queries, order)
    results: list[dict[str, Any] | None] = [None] * len(queries)
    bar = tqdm(serve, desc=f"batch ({order})", unit="q", file=sys.stderr, disable=not progress)
    for i in bar:
        bar.set_postfix_str(experts[i])
        out = graph.invoke({"query": queries[i], "mode": mode, "expert": experts[i]}, context=context)
        results[i] = {"index": i, "query": queries[i], **result_of(out)}
    return [r for r in results if r is not None]
