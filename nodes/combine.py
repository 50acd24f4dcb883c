"""combine: the ensemble's weighted vote over the experts' answers (optionally judged by the loaded expert)."""

from __future__ import annotations

from typing import Any

from langgraph.runtime import Runtime

from ech0_moe.graph.context import Context
from ech0_moe.graph.state import State
from ech0_moe.judge import JUDGE_TOKENS, judge_messages, read_pick
from ech0_moe.nodes._common import context, run_services, timed
from ech0_moe.nodes.answer import truncated_warning
from ech0_moe.services import ServiceProvider
from ech0_moe.vote import weighted_vote


@timed("combine")
def combine(state: State, runtime: Runtime[Context], services: ServiceProvider) -> dict[str, Any]:
    """Weighted vote over the experts' answers (route score as weight); every response stays in the result."""
    responses = sorted(state.responses, key=lambda r: r["order"])
    result = weighted_vote(responses)
    warnings: list[str] = []
    if context(runtime).vote_judge == "expert" and not state.choices and len(result["votes"]) > 1:
        judged, note = _judged(state, runtime, services, responses)
        result.update(judged)
        warnings += [note] if note else []
    failed = [f"{r['expert']}: {r['error']}" for r in responses if r["error"]]
    winner = next((r for r in responses if r["expert"] == result["expert_used"] and r["solution"]), None)
    truncated = bool(winner and winner["truncated"])
    if truncated and winner:
        warnings.append(truncated_warning(winner["completion_tokens"]))
    return {
        "warnings": warnings,
        "error": "" if result["solution"] else "; ".join(failed) or "no expert answered",
        "solution": result["solution"],
        "votes": result["votes"],
        "judged_by": result.get("judged_by", ""),
        "expert_used": result["expert_used"] or state.expert_used,
        "truncated": truncated,
        "tokens": {"completion": sum(r["completion_tokens"] for r in responses)},
        "swapped": any(r["swapped"] for r in responses),
        "load_seconds": round(sum(r["load_seconds"] for r in responses), 4),
        "choice": winner["choice"] if winner else -1,
        "choice_scores": winner.get("choice_scores", []) if winner else [],
        "choice_method": winner.get("choice_method", "") if winner else "",
    }


def _judged(
    state: State, runtime: Runtime[Context], services: ServiceProvider, responses: list[dict[str, Any]]
) -> tuple[dict[str, Any], str]:
    """The answer an expert that is still loaded names as most consistent with the others
    (`judge`), or nothing and a warning: the rules' vote then stands. Never loads an expert."""
    svc = run_services(runtime, services)
    usable = [r for r in responses if r["solution"]]
    loaded = set(svc.pool.loaded_experts())
    judge = next((r["expert"] for r in sorted(usable, key=lambda r: -r["route_score"]) if r["expert"] in loaded), "")
    if not judge:
        return {}, "vote_judge: no answering expert is still loaded; the rules' vote stands"
    try:
        reply, _ = svc.pool.chat(judge, judge_messages(state.query, [r["solution"] for r in usable]), JUDGE_TOKENS)
    except Exception as exc:  # the judge is an extra: its failure leaves the vote as it was
        return {}, f"vote_judge: {judge} could not judge ({type(exc).__name__}); the rules' vote stands"
    pick = read_pick(reply.text, len(usable))
    if pick < 0:
        return {}, f"vote_judge: {judge} named no response; the rules' vote stands"
    chosen = usable[pick]
    return {"solution": chosen["solution"], "expert_used": chosen["expert"], "judged_by": judge}, ""
