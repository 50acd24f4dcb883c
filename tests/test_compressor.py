"""Extractive compression: honours the ratio, keeps the question and the key facts (no model needed)."""

from __future__ import annotations

import pytest

from ech0_moe.compressor import ExtractiveCompressor, count_tokens, split_question

DOC = (
    "The Hubble Space Telescope was launched on 24 April 1990 aboard the Space Shuttle Discovery. "
    "It orbits Earth at an altitude of about 540 kilometres. Basically, it is one of the largest "
    "space telescopes and it has a 2.4 metre mirror. The telescope was named after the astronomer "
    "Edwin Hubble. Its observations helped to determine the rate of expansion of the universe. "
    "Many people really enjoy looking at its pictures, which are very beautiful. It should be noted that "
    "the telescope has been serviced five times by astronauts. The final servicing mission took place "
    "in May 2009. Hubble operates in ultraviolet, visible and near-infrared light. "
) * 3


@pytest.mark.parametrize("ratio", [0.3, 0.4, 0.5, 0.7])
def test_ratio_is_achieved_within_five_percent(ratio: float) -> None:
    c = ExtractiveCompressor().compress("When was the Hubble Space Telescope launched?", [DOC], ratio=ratio)
    assert c.original_tokens > 200
    assert abs(c.ratio - ratio) <= 0.05
    assert c.question == "When was the Hubble Space Telescope launched?"
    assert count_tokens(c.prompt()) > 0


def test_keeps_the_answer_and_drops_filler() -> None:
    c = ExtractiveCompressor().compress("When was the Hubble Space Telescope launched?", [DOC], ratio=0.3)
    assert "1990" in c.context
    assert "Basically" not in c.context


def test_short_inputs_are_left_alone() -> None:
    c = ExtractiveCompressor().compress("What is 2 + 2?", [], ratio=0.3)
    assert c.ratio == 1.0 and c.prompt() == "What is 2 + 2?"


def test_split_question_finds_the_question() -> None:
    preamble, question = split_question("I have a circuit. It has two resistors. What is the total resistance? Thanks.")
    assert question == "What is the total resistance?"
    assert "two resistors" in preamble
