"""route: choose the expert (or the top k for the ensemble) from the raw query."""

from __future__ import annotations

import uuid
from dataclasses import replace
from typing import Any

from langgraph.runtime import Runtime

from ech0_moe.errors import InputError
from ech0_moe.graph.context import Context
from ech0_moe.graph.state import State
from ech0_moe.nodes._common import context, progress, run_services, timed
from ech0_moe.services import ServiceProvider
from ech0_moe.text import check_fits


@timed("route")
def route(state: State, runtime: Runtime[Context], services: ServiceProvider) -> dict[str, Any]:
    """Score every expert on the raw query; prefer a resident expert when it scores
    within the stay margin of the best, a margin that grows with the load it would
    save (`stay_per_second`). No expert model is loaded here. The ensemble's
    candidates come in the pool's serving order (resident first, grouped by file)."""
    svc = run_services(runtime, services)
    pool = svc.pool
    if state.mode == "ensemble":
        decision = svc.router.route(state.query, top_k=context(runtime).ensemble_k)
    else:
        decision = svc.router.route(state.query, loaded=pool.loaded_experts(), load_seconds=pool.expected_load_seconds)
    if state.expert and state.mode != "ensemble":
        if state.expert not in pool.specs:
            raise InputError(f"unknown expert {state.expert!r}; known: {', '.join(pool.specs)}")
        decision = replace(
            decision,
            expert=state.expert,
            domain=pool.specs[state.expert].domain,
            reason=f"expert {state.expert!r} chosen by the caller",
            stayed=False,
            ranked=[state.expert],
        )
    candidates = [decision.ranked[i] for i in pool.serving_order(decision.ranked)]
    for name in candidates:  # before anything is loaded
        spec = pool.specs[name]
        check_fits(state.query, spec.system_prompt, context(runtime).max_tokens or spec.max_tokens, spec.n_ctx, name)
    progress("routed", expert=decision.expert, confidence=decision.confidence, reason=decision.reason)
    return {
        "expert_used": decision.expert,
        "domain": decision.domain,
        "route_scores": decision.scores,
        "route_confidence": decision.confidence,
        "route_reason": decision.reason,
        "route_stayed": decision.stayed,
        "candidates": candidates,
        "ensemble_id": uuid.uuid4().hex if state.mode == "ensemble" else "",
    }
