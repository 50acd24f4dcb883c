"""route: choose the expert (or the top k for the ensemble) from the raw query."""

from __future__ import annotations

import uuid
from typing import Any

from langgraph.runtime import Runtime

from graph.context import Context
from graph.state import State
from nodes._common import context, services, timed


@timed("route")
def route(state: State, runtime: Runtime[Context]) -> dict[str, Any]:
    """Score every expert; no expert model is loaded here."""
    svc = services(runtime)
    mode = state.mode
    k = context(runtime).ensemble_k if mode == "ensemble" else 1
    decision = svc.router.route(state.query, top_k=k)
    update: dict[str, Any] = {
        "expert_used": decision.expert,
        "domain": decision.domain,
        "route_scores": decision.scores,
        "route_confidence": decision.confidence,
        "route_reason": decision.reason,
        "candidates": decision.ranked,
    }
    if mode == "ensemble":
        # Serve the already-loaded expert first so the fan-out costs as few swaps as possible.
        ranked = sorted(decision.ranked, key=lambda n: not svc.pool.is_loaded(n))
        run_id = uuid.uuid4().hex
        svc.turns.open(run_id, len(ranked))
        update.update(candidates=ranked, ensemble_id=run_id)
    return update
