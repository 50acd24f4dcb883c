"""swap_load: make the routed expert resident, unloading others to stay within the budget."""

from __future__ import annotations

from typing import Any

from langgraph.runtime import Runtime

from graph.context import Context
from graph.state import State
from nodes._common import services, timed


@timed("swap_load")
def swap_load(state: State, runtime: Runtime[Context]) -> dict[str, Any]:
    """Load the expert if it is not resident; record whether that was a swap and its cost."""
    acquired = services(runtime).pool.ensure_loaded(state.expert_used)
    return {"swapped": acquired.swapped, "load_seconds": round(acquired.load_seconds, 4)}
