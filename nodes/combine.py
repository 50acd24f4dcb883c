"""combine: the ensemble's weighted vote over the experts' answers."""

from __future__ import annotations

from typing import Any

from ech0_moe.graph.state import State
from ech0_moe.nodes._common import timed
from ech0_moe.nodes.answer import truncated_warning
from ech0_moe.vote import weighted_vote


@timed("combine")
def combine(state: State) -> dict[str, Any]:
    """Weighted vote over the experts' answers (route score as weight); every response stays in the result."""
    responses = sorted(state.responses, key=lambda r: r["order"])
    result = weighted_vote(responses)
    failed = [f"{r['expert']}: {r['error']}" for r in responses if r["error"]]
    winner = next((r for r in responses if r["expert"] == result["expert_used"] and r["solution"]), None)
    truncated = bool(winner and winner["truncated"])
    return {
        "warnings": [truncated_warning(winner["completion_tokens"])] if truncated and winner else [],
        "error": "" if result["solution"] else "; ".join(failed) or "no expert answered",
        "solution": result["solution"],
        "votes": result["votes"],
        "expert_used": result["expert_used"] or state.expert_used,
        "truncated": truncated,
        "tokens": {"completion": sum(r["completion_tokens"] for r in responses)},
        "swapped": any(r["swapped"] for r in responses),
        "load_seconds": round(sum(r["load_seconds"] for r in responses), 4),
        "choice": winner["choice"] if winner else -1,
        "choice_scores": winner.get("choice_scores", []) if winner else [],
        "choice_method": winner.get("choice_method", "") if winner else "",
    }
