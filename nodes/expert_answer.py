"""expert_answer: one ensemble branch (a `Send`) asks one expert, in the pool's serving order."""

from __future__ import annotations

import time
from typing import Any

from langgraph.errors import NodeError
from langgraph.runtime import Runtime
from langgraph.types import Command

from ech0_moe.graph.context import Context
from ech0_moe.graph.state import ExpertTask
from ech0_moe.nodes._common import context, run_services
from ech0_moe.nodes.answer import ask_expert
from ech0_moe.services import ServiceProvider
from ech0_moe.vote import normalise


def expert_answer(task: ExpertTask, runtime: Runtime[Context], services: ServiceProvider) -> dict[str, Any]:
    """Wait for this branch's turn (resident expert first), then answer - unless the answers
    so far already hold a majority (early stop: no load, no generation)."""
    svc = run_services(runtime, services)
    entry: dict[str, Any] = {"expert": task.expert, "route_score": task.route_score, "order": task.order}
    with svc.turns.turn(task.ensemble_id, task.order, task.size) as run:
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
