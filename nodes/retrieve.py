"""retrieve: fetch relevant past answers and document chunks from the knowledge base."""

from __future__ import annotations

from typing import Any

from langgraph.runtime import Runtime

from ech0_moe.errors import KnowledgeBaseError
from ech0_moe.graph.context import Context
from ech0_moe.graph.state import State
from ech0_moe.nodes._common import asker, context, progress, run_services, timed
from ech0_moe.owners import readable_by
from ech0_moe.services import ServiceProvider


@timed("retrieve")
def retrieve(state: State, runtime: Runtime[Context], services: ServiceProvider) -> dict[str, Any]:
    """Top-k diverse passages within the distance threshold, with source, kind, owner and score,
    of the asker's namespace and the shared one; optionally only those of the routed expert's
    domain. A store that cannot be read is a warning: the expert answers without retrieved passages."""
    ctx = context(runtime)
    try:
        hits = run_services(runtime, services).kb.search(
            state.query,
            k=ctx.top_k,
            max_distance=ctx.max_distance,
            domain=state.domain if ctx.filter_by_domain else None,
            owners=readable_by(asker(runtime)),  # the asker's own memory and the shared documents
        )
    except KnowledgeBaseError as exc:
        progress("retrieved", count=0)
        return {"retrieved_contexts": [], "warnings": [f"retrieve skipped: {exc}"]}
    progress("retrieved", count=len(hits))
    return {"retrieved_contexts": [h.as_dict() for h in hits]}
