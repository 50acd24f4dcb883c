"""route: choose the expert (or the top k for the ensemble) from the raw query."""

from __future__ import annotations

import uuid
from dataclasses import replace
from typing import Any

from langgraph.runtime import Runtime

from ech0_moe.errors import Ech0Error
from graph.context import Context
from graph.state import State
from nodes._common import context, services, timed


@timed("route")
def route(state: State, runtime: Runtime[Context]) -> dict[str, Any]:
    """Score every expert on the raw query; prefer a resident expert when it scores
    within the stay margin of the best, a margin that grows with the load it would
    save (`stay_per_second`). No expert model is loaded here."""
    svc = services(runtime)
    mode = state.mode
    if mode == "ensemble":
        decision = svc.router.route(state.query, top_k=context(runtime).ensemble_k)
    else:
        decision = svc.router.route(
            state.query, loaded=svc.pool.loaded_experts(), load_seconds=svc.pool.expected_load_seconds
        )
    if state.expert and mode != "ensemble":
        if state.expert not in svc.pool.specs:
            raise Ech0Error(f"unknown expert {state.expert!r}; known: {', '.join(svc.pool.specs)}")
        decision = replace(
            decision,
            expert=state.expert,
            domain=svc.pool.specs[state.expert].domain,
            reason=f"expert {state.expert!r} chosen by the caller",
            stayed=False,
            ranked=[state.expert],
        )
    update: dict[str, Any] = {
        "expert_used": decision.expert,
        "domain": decision.domain,
        "route_scores": decision.scores,
        "route_confidence": decision.confidence,
        "route_reason": decision.reason,
        "route_stayed": decision.stayed,
        "candidates": decision.ranked,
    }
    if mode == "ensemble":
        # Loaded expert first, the rest grouped by weights file: as few swaps as possible.
        files = [svc.pool.specs[n].model_key for n in decision.ranked]
        ranked = sorted(
            decision.ranked, key=lambda n: (not svc.pool.is_loaded(n), files.index(svc.pool.specs[n].model_key))
        )
        run_id = uuid.uuid4().hex
        svc.turns.open(run_id, len(ranked))
        update.update(candidates=ranked, ensemble_id=run_id)
    return update
