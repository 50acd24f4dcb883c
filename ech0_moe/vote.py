"""Ensemble voting: answers with the same key pool their route scores."""

from __future__ import annotations

import re
from collections import defaultdict
from typing import Any

_NORM = re.compile(r"[^a-z0-9]+")


def normalise(answer: str) -> str:
    """Key used for voting: a leading choice letter ('B) ...'), else the first 12 words, lower-case."""
    text = answer.strip()
    m = re.match(r"^\(?([A-Da-d])[).:\s]", text + " ")
    if m:
        return m.group(1).upper()
    return _NORM.sub(" ", text.lower()).strip()[:80]


def weighted_vote(answers: list[dict[str, Any]]) -> dict[str, Any]:
    """Weighted vote: answers with the same normalised key pool their route scores;
    the winning group's answer from its highest-scored expert is the solution."""
    usable = [a for a in answers if a.get("solution")]
    if not usable:
        return {"solution": "", "expert_used": "", "votes": {}}
    weight: dict[str, float] = defaultdict(float)
    for a in usable:
        weight[normalise(a["solution"])] += float(a.get("route_score", 0.0)) + 1e-6
    best_key = max(weight, key=lambda k: weight[k])
    best = max((a for a in usable if normalise(a["solution"]) == best_key), key=lambda a: a.get("route_score", 0.0))
    return {
        "solution": best["solution"],
        "expert_used": best["expert"],
        "votes": {k: round(v, 4) for k, v in weight.items()},
    }
