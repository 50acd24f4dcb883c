"""ensemble: each Send branch asks one expert (strictly one after another); combine votes."""

from __future__ import annotations

import time
from typing import Any

from langgraph.runtime import Runtime

from ech0_moe.ensemble import combine
from graph.context import Context
from graph.state import ExpertTask, State
from nodes._common import context, services, timed
from nodes.answer import ask_expert


def expert_answer(task: ExpertTask, runtime: Runtime[Context]) -> dict[str, Any]:
    """One ensemble branch: wait for its turn (loaded expert first), then answer."""
    svc = services(runtime)
    with svc.turns.turn(task.ensemble_id, task.order):
        t0 = time.perf_counter()
        text, swapped, seconds = ask_expert(svc, task.expert, task.prompt or task.query, context(runtime).max_tokens)
        elapsed = round(time.perf_counter() - t0, 4)
    return {
        "answers": [
            {
                "expert": task.expert,
                "solution": text,
                "swapped": swapped,
                "load_seconds": round(seconds, 4),
                "route_score": task.route_score,
                "order": task.order,
            }
        ],
        "timings": {f"answer:{task.expert}": elapsed},
    }


@timed("combine")
def combine_answers(state: State) -> dict[str, Any]:
    """Weighted vote over the experts' answers (route score as weight)."""
    result = combine(state.answers)
    return {
        "solution": result["solution"],
        "expert_used": result["expert_used"] or state.expert_used,
        "swapped": any(a["swapped"] for a in state.answers),
        "load_seconds": round(sum(a["load_seconds"] for a in state.answers), 4),
    }
