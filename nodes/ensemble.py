"""ensemble: each Send branch asks one expert (strictly one after another); combine votes."""

from __future__ import annotations

import time
from typing import Any

from langgraph.errors import NodeError
from langgraph.runtime import Runtime
from langgraph.types import Command

from ech0_moe.ensemble import combine, normalise
from graph.context import Context
from graph.state import ExpertTask, State
from nodes._common import context, services, timed
from nodes.answer import ask_expert


def expert_answer(task: ExpertTask, runtime: Runtime[Context]) -> dict[str, Any]:
    """One ensemble branch: wait for its turn (loaded expert first), then answer -
    unless the answers so far already hold a majority (early stop: no load, no generation)."""
    svc = services(runtime)
    entry: dict[str, Any] = {"expert": task.expert, "route_score": task.route_score, "order": task.order}
    with svc.turns.turn(task.ensemble_id, task.order) as run:
        if run.majority_reached():
            return {"answers": [{**entry, "solution": "", "swapped": False, "load_seconds": 0.0, "skipped": True}]}
        t0 = time.perf_counter()
        text, swapped, seconds = ask_expert(svc, task.expert, task.prompt or task.query, context(runtime).max_tokens)
        run.answers.append(normalise(text))
        elapsed = round(time.perf_counter() - t0, 4)
    entry.update(solution=text, swapped=swapped, load_seconds=round(seconds, 4), skipped=False)
    return {"answers": [entry], "timings": {f"answer:{task.expert}": elapsed}}


def expert_failed(task: ExpertTask, error: NodeError) -> Command:
    """After its retries, a failed ensemble branch is recorded and the others still vote."""
    entry = {"expert": task.expert, "route_score": task.route_score, "order": task.order, "solution": ""}
    entry.update(swapped=False, load_seconds=0.0, skipped=False, error=str(error.error))
    return Command(update={"answers": [entry]}, goto="combine")


@timed("combine")
def combine_answers(state: State) -> dict[str, Any]:
    """Weighted vote over the experts' answers (route score as weight)."""
    result = combine(state.answers)
    failed = [f"{a['expert']}: {a['error']}" for a in state.answers if a.get("error")]
    return {
        "error": "" if result["solution"] else "; ".join(failed) or "no expert answered",
        "solution": result["solution"],
        "expert_used": result["expert_used"] or state.expert_used,
        "swapped": any(a["swapped"] for a in state.answers),
        "load_seconds": round(sum(a["load_seconds"] for a in state.answers), 4),
    }
