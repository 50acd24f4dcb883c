"""swap_load: make the routed expert resident, unloading others to stay within the budget."""

from __future__ import annotations

from typing import Any

from langgraph.runtime import Runtime

from ech0_moe.graph.context import Context
from ech0_moe.graph.state import State
from ech0_moe.nodes._common import run_services, timed
from ech0_moe.services import ServiceProvider


@timed("swap_load")
def swap_load(state: State, runtime: Runtime[Context], services: ServiceProvider) -> dict[str, Any]:
    """Load the expert if it is not resident; record whether that was a swap and its cost."""
    acquired = run_services(runtime, services).pool.ensure_loaded(state.expert_used)
    return {"swapped": acquired.swapped, "load_seconds": round(acquired.load_seconds, 4)}
