"""expert_answer: one ensemble branch (a `Send`) asks one expert, in the pool's serving order."""

from __future__ import annotations

import time
from typing import Any

from langgraph.errors import NodeError
from langgraph.runtime import Runtime
from langgraph.types import Command

from ech0_moe.choices import LETTERS
from ech0_moe.graph.context import Context
from ech0_moe.graph.state import ExpertTask
from ech0_moe.nodes._common import context, run_services
from ech0_moe.nodes.answer import ask_expert
from ech0_moe.services import ServiceProvider


def response(task: ExpertTask, **fields: Any) -> dict[str, Any]:
    """One entry of the ensemble's `responses`: the expert, its route score and what happened."""
    entry: dict[str, Any] = {"expert": task.expert, "route_score": task.route_score, "order": task.order}
    entry.update(solution="", vote_key="", swapped=False, load_seconds=0.0, skipped=False, error="")
    entry.update(truncated=False, completion_tokens=0, served_by="", choice=-1)
    return {**entry, **fields}


def expert_answer(task: ExpertTask, runtime: Runtime[Context], services: ServiceProvider) -> dict[str, Any]:
    """Wait for this branch's turn (resident expert first), then answer - unless the answers
    so far already hold a majority (early stop: no load, no generation)."""
    svc = run_services(runtime, services)
    with svc.turns.turn(task.ensemble_id, task.order, task.size) as run:
        if run.majority_reached():
            return {"responses": [response(task, skipped=True)]}
        t0 = time.perf_counter()
        reply, acquired, choice = ask_expert(
            svc, task.expert, task.prompt or task.query, context(runtime), task.choices
        )
        if task.choices:  # the option picked is the vote (none readable: no vote)
            key = LETTERS[choice["choice"]] if choice["choice"] >= 0 else ""
        elif reply.text.strip():  # an open answer votes with the earlier answers that mean the same
            key = svc.agreement.key(reply.text, run.given, task.query)
        else:
            key = ""
        run.record(key, reply.text)
        elapsed = round(time.perf_counter() - t0, 4)
    entry = response(
        task,
        solution=reply.text,
        vote_key=key,
        swapped=acquired.swapped,
        load_seconds=round(acquired.load_seconds, 4),
        served_by=acquired.served_by,
        **choice,
        truncated=reply.truncated,
        completion_tokens=reply.completion_tokens,
    )
    return {"responses": [entry], "timings": {f"answer:{task.expert}": elapsed}}


def expert_failed(task: ExpertTask, error: NodeError) -> Command:
    """After its retries, a failed ensemble branch is recorded and the others still vote."""
    return Command(update={"responses": [response(task, error=str(error.error))]}, goto="combine")
