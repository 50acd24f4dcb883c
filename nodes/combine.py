"""combine: the ensemble's weighted vote over the experts' answers."""

from __future__ import annotations

from typing import Any

from ech0_moe.graph.state import State
from ech0_moe.nodes._common import timed
from ech0_moe.vote import weighted_vote


@timed("combine")
def combine(state: State) -> dict[str, Any]:
    """Weighted vote over the experts' answers (route score as weight)."""
    result = weighted_vote(state.answers)
    failed = [f"{a['expert']}: {a['error']}" for a in state.answers if a.get("error")]
    return {
        "error": "" if result["solution"] else "; ".join(failed) or "no expert answered",
        "solution": result["solution"],
        "expert_used": result["expert_used"] or state.expert_used,
        "swapped": any(a["swapped"] for a in state.answers),
        "load_seconds": round(sum(a["load_seconds"] for a in state.answers), 4),
    }
