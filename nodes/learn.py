"""learn: remember the question and its answer for later retrieval."""

from __future__ import annotations

from typing import Any

from langgraph.runtime import Runtime

from graph.context import Context
from graph.state import State
from nodes._common import services, timed


@timed("learn")
def learn(state: State, runtime: Runtime[Context]) -> dict[str, Any]:
    """Store Q/A with expert, mode and time; empty or failed answers are skipped, near-duplicates updated."""
    if state.error:
        return {"learned_id": ""}
    entry = services(runtime).kb.learn(
        state.query, state.solution, expert=state.expert_used, domain=state.domain, mode=state.mode
    )
    return {"learned_id": entry or ""}
