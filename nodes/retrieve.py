"""retrieve: fetch relevant past answers and document chunks from the knowledge base."""

from __future__ import annotations

from typing import Any

from langgraph.runtime import Runtime

from graph.context import Context
from graph.state import State
from nodes._common import context, services, timed


@timed("retrieve")
def retrieve(state: State, runtime: Runtime[Context]) -> dict[str, Any]:
    """Top-k diverse contexts within the distance threshold, with source, kind and score;
    optionally only those of the routed expert's domain."""
    ctx = context(runtime)
    hits = services(runtime).kb.search(
        state.query,
        k=ctx.top_k,
        max_distance=ctx.max_distance,
        domain=state.domain if ctx.filter_by_domain else None,
    )
    return {"retrieved_contexts": [h.as_dict() for h in hits]}
