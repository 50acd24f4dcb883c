"""Ensemble voting and turn-taking (no model needed)."""

from __future__ import annotations

import threading
import time

from ech0_moe.turns import EnsembleRun, TurnRegistry
from ech0_moe.vote import normalise, weighted_vote


def test_weighted_vote_prefers_agreement_over_single_high_score() -> None:
    answers = [
        {"expert": "a", "solution": "B) 42", "route_score": 0.5},
        {"expert": "b", "solution": "(B) forty-two", "route_score": 0.2},
        {"expert": "c", "solution": "C) 41", "route_score": 0.6},
    ]
    result = weighted_vote(answers)
    assert normalise(result["solution"]) == "B"
    assert result["expert_used"] == "a"


def test_no_agreement_falls_back_to_best_routed_expert() -> None:
    answers = [
        {"expert": "a", "solution": "Paris", "route_score": 0.3},
        {"expert": "b", "solution": "Lyon", "route_score": 0.7},
        {"expert": "c", "solution": "", "route_score": 0.9},
    ]
    assert weighted_vote(answers)["expert_used"] == "b"


def test_turns_run_in_order_even_when_started_backwards() -> None:
    registry = TurnRegistry()
    order: list[int] = []

    def branch(i: int) -> None:
        with registry.turn("run", i, 4) as run:
            order.append(i)
            run.answers.append("A" if i < 2 else "B")
            time.sleep(0.01)

    threads = [threading.Thread(target=branch, args=(i,)) for i in reversed(range(4))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=5)
    assert order == [0, 1, 2, 3]


def test_majority_stops_the_ensemble_early() -> None:
    run = EnsembleRun(size=3)
    run.answers += ["A", "B"]
    assert not run.majority_reached()
    run.answers.append("A")
    assert run.majority_reached()
    assert EnsembleRun(size=3, answers=["C", "C"]).majority_reached()
    assert not EnsembleRun(size=4, answers=["C", "C"]).majority_reached()
