"""learn: remember the question and its answer for later retrieval."""

from __future__ import annotations

from typing import Any

from langgraph.runtime import Runtime

from ech0_moe.errors import KnowledgeBaseError
from ech0_moe.graph.context import Context
from ech0_moe.graph.state import State
from ech0_moe.nodes._common import run_services, timed
from ech0_moe.safety import looks_like_instructions
from ech0_moe.services import ServiceProvider


@timed("learn")
def learn(state: State, runtime: Runtime[Context], services: ServiceProvider) -> dict[str, Any]:
    """Store Q/A with expert, mode and time; near-duplicates are updated. A failed, empty or
    truncated answer is never learned."""
    if state.error or state.truncated or not state.solution.strip():
        return {"learned_id": ""}
    if looks_like_instructions(state.query) or looks_like_instructions(state.solution):
        return {
            "learned_id": "",
            "warnings": ["not learned: the question or answer reads as instructions to the model"],
        }
    try:
        entry = run_services(runtime, services).kb.learn(
            state.query, state.solution, expert=state.expert_used, domain=state.domain, mode=state.mode or ""
        )
    except KnowledgeBaseError as exc:  # the answer stands; nothing stored is touched
        return {"learned_id": "", "warnings": [f"not learned: {exc}"]}
    return {"learned_id": entry or ""}
