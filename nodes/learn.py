"""learn: remember the question and its answer, as the asker's, for later retrieval."""

from __future__ import annotations

from typing import Any

from langgraph.runtime import Runtime

from ech0_moe.errors import KnowledgeBaseError
from ech0_moe.graph.context import Context
from ech0_moe.graph.state import State
from ech0_moe.nodes._common import asker, run_services, timed
from ech0_moe.services import ServiceProvider


@timed("learn")
def learn(state: State, runtime: Runtime[Context], services: ServiceProvider) -> dict[str, Any]:
    """Store Q/A with expert, mode, time and owner (the asker); near-duplicates of the asker's own
    are updated. A failed, empty or truncated answer is never learned. What is learned reaches only
    its owner's later prompts, and only quoted as data (`safety.quote`): no text is refused for
    what it says."""
    if state.error or state.truncated or not state.solution.strip():
        return {"learned_id": ""}
    try:
        entry = run_services(runtime, services).kb.learn(
            state.query,
            state.solution,
            expert=state.expert_used,
            domain=state.domain,
            mode=state.mode or "",
            owner=asker(runtime),
        )
    except KnowledgeBaseError as exc:  # the answer stands; nothing stored is touched
        return {"learned_id": "", "warnings": [f"not learned: {exc}"]}
    return {"learned_id": entry or ""}
