"""Ensemble voting and turn-taking (no model needed)."""

from __future__ import annotations

import threading
import time

import numpy as np

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


def test_short_named_answers_that_differ_are_kept_apart() -> None:
    """Close embeddings are not the same answer: a word swapped in place is a different one."""
    agree = Agreement(lambda texts: np.ones((len(texts), 4)) / 2)  # an encoder that finds everything alike
    assert not agree.same("Canberra.", "Sydney.", "What is the capital of Australia?")
    assert not agree.same("O(log n)", "O(n)")
    assert not agree.same("O(log n)", "It runs in O(n log n) time.")
    assert agree.same("O(log n)", "It runs in O(log n) time.")
    assert not agree.same("Deoxyribonucleic acid.", "Ribonucleic acid.")
    assert not agree.same("The answer is In the upper wall of the right atrium.", "In the lower wall of the atrium.")
    assert not agree.same("exports minus imports", "imports minus exports")
    assert not agree.same("True, False", "True, True")
    assert not agree.same("Pupillary constriction", "Pupillary constriction and vasodilation of facial vessels")
    assert agree.same("The Odyssey was written by Homer.", "Homer wrote it.", "Who wrote the Odyssey?")
    assert agree.same("Albert Einstein.", "It was proposed by Albert Einstein in 1915.")


def test_quantities_compare_in_one_unit_system() -> None:
    agree = Agreement()
    assert agree.same("100 degrees Celsius.", "212 degrees Fahrenheit.")
    assert agree.same("About 8 minutes.", "Roughly 8 min 20 s.")  # within the minute "about 8" allows
    assert not agree.same("About 8 minutes.", "About 9 minutes.")
    assert agree.same("60 mph", "about 97 km/h")
    assert agree.same("2 hours and 15 minutes", "135 minutes")
    assert agree.same("0 °C", "32 °F")
    assert not agree.same("10^-24 %", "10^-39 %")
    assert agree.same("60", "Sixty minutes.")  # a bare number is compared as written
    assert not agree.same("4 and 19 over 20", "4 and 1 over 20")


def test_a_no_without_not_pools_with_no() -> None:
    agree = Agreement()
    assert agree.same("No, it is not safe.", "It should be avoided: unsafe in the third trimester.")
    assert not agree.same("Yes, it is safe.", "It should be avoided: unsafe in the third trimester.")


def test_exam_pairs_are_split_before_use() -> None:
    from ech0_moe.bench.pairs import derive, split_of

    rows = [{"question": f"Q{i}?", "choices": ["Paris", "Lyon", "Nice", "Lille"], "answer": "A"} for i in range(40)]
    pairs = derive(rows)
    assert len(pairs) == 80 and sum(p["same"] for p in pairs) == 40
    assert {p["split"] for p in pairs} == {"tune", "test"}
    assert all(p["split"] == split_of(p["question"]) for p in pairs)


def test_formulas_and_their_names_and_yes_with_a_reason() -> None:
    agree = Agreement()
    assert agree.same("Carbon dioxide.", "They take in CO2.", "What gas do plants take in?")
    assert not agree.same("DNA", "RNA")
    q = "Is a tomato a fruit?"
    assert agree.same("Yes, botanically it is a fruit.", "A tomato is a fruit in the botanical sense.", q)
    assert not agree.same("Yes, botanically it is a fruit.", "It is red.", q)  # says nothing of the reason
