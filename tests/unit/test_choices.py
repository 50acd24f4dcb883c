"""Multiple-choice questions on the fake backend: the pick by log-probability, by a letter read
from a short answer, through the ensemble's vote, and malformed options as one error."""

from __future__ import annotations

import pytest

from ech0_moe.choices import check_choices, parse_letter
from ech0_moe.errors import InputError
from ech0_moe.graph import Context, build_graph
from ech0_moe.services import Services

QUESTION = "Solve the equation 3x = 9"
CHOICES = ["x = 1", "x = 3", "x = 9"]


def test_loglik_picks_the_most_likely_letter_and_reports_every_score(services: Services, fake) -> None:
    fake.letter_scores = lambda spec, n: [-2.0, -0.1, -3.0][:n]
    out = build_graph(services=services).invoke(
        {"query": QUESTION, "choices": CHOICES, "mode": "basic"}, context=Context()
    )
    assert (out["choice"], out["solution"], out["choice_method"]) == (1, "B. x = 3", "loglik")
    assert out["choice_scores"] == [-2.0, -0.1, -3.0] and fake.prompts == []  # nothing generated
    assert out["expert_used"] == "math" and out["swapped"]


def test_letter_read_from_a_short_answer_when_there_are_no_logprobs(services: Services, fake) -> None:
    fake.reply = lambda spec, prompt: "The answer is (C)." if "C. x = 9" in prompt else "?"
    out = build_graph(services=services).invoke(
        {"query": QUESTION, "choices": CHOICES, "mode": "fast"}, context=Context()
    )
    assert (out["choice"], out["solution"], out["choice_method"]) == (2, "C. x = 9", "letter")
    assert "A. x = 1\nB. x = 3\nC. x = 9" in fake.prompts[0][1]


def test_ensemble_votes_on_the_picked_option(services: Services, fake) -> None:
    fake.letter_scores = lambda spec, n: [0.0, -1.0, -2.0] if spec.name != "biology" else [-5.0, -1.0, 0.0]
    out = build_graph(services=services).invoke(
        {"query": QUESTION, "choices": CHOICES, "mode": "ensemble"}, context=Context(ensemble_k=3)
    )
    picked = [r["choice"] for r in out["responses"] if not r["skipped"]]
    assert picked and out["choice"] == 0 and out["solution"] == "A. x = 1"


@pytest.mark.parametrize(
    ("choices", "message"),
    [("A or B", "list of non-empty strings"), (["only one"], "2 to 26 options"), (["a", " "], "non-empty")],
)
def test_malformed_choices_are_one_input_error(services: Services, choices: object, message: str) -> None:
    with pytest.raises(InputError, match=message):
        build_graph(services=services).invoke({"query": QUESTION, "choices": choices}, context=Context())
    assert check_choices(None) == []


def test_parse_letter_finds_the_first_standalone_option_letter() -> None:
    assert parse_letter("Answer: D.", 4) == 3 and parse_letter("(b) no, B", 4) == 1
    assert parse_letter("A cat", 2) == 0 and parse_letter("Eventually E", 4) == -1 and parse_letter("", 4) == -1
