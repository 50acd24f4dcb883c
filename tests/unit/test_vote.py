"""Ensemble voting and turn-taking (no model needed)."""

from __future__ import annotations

import threading
import time

from ech0_moe.turns import EnsembleRun, TurnRegistry
from ech0_moe.vote import Agreement, weighted_vote


def test_weighted_vote_prefers_agreement_over_single_high_score() -> None:
    answers = [
        {"expert": "a", "solution": "B. 42", "vote_key": "B", "route_score": 0.5},
        {"expert": "b", "solution": "B. 42", "vote_key": "B", "route_score": 0.2},
        {"expert": "c", "solution": "C. 41", "vote_key": "C", "route_score": 0.6},
    ]
    result = weighted_vote(answers)
    assert result["solution"] == "B. 42"
    assert result["expert_used"] == "a"


def test_no_agreement_falls_back_to_best_routed_expert() -> None:
    answers = [
        {"expert": "a", "solution": "Paris", "vote_key": "paris", "route_score": 0.3},
        {"expert": "b", "solution": "Lyon", "vote_key": "lyon", "route_score": 0.7},
        {"expert": "c", "solution": "", "vote_key": "", "route_score": 0.9},
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


def test_agreement_reads_final_answers_not_first_characters() -> None:
    agree = Agreement()  # no encoder: final answers and shared words only
    assert agree.same("Newton.", "It is the newton (N).", "What is the SI unit of force?")
    assert not agree.same("Newton.", "Joule", "What is the SI unit of force?")
    assert agree.same("12 V", "The voltage is 12 volts.")
    assert not agree.same("12 V", "12 A")  # same number, another unit
    assert not agree.same("The voltage is 12 V.", "The voltage is 21 V.")
    assert agree.same("About 300,000 km per second.", "Roughly 3 x 10^8 m/s.")  # within the precision given
    assert not agree.same("Pi is about 3.14.", "3.15")
    assert agree.same("No, penguins cannot fly.", "No. Penguins are flightless birds.")
    assert not agree.same("Yes, penguins can fly.", "No, penguins cannot fly.")
    assert not agree.same("A 4 ohm resistor carries 3 A.", "A 4 ohm resistor carries 2 A.")


def test_vote_keys_pool_paraphrases() -> None:
    agree, given = Agreement(), []
    for text in ("Newton.", "It is the newton (N).", "Joule"):
        given.append((agree.key(text, given, "What is the SI unit of force?"), text))
    assert [k for k, _ in given] == ["newton", "newton", "joule"]
