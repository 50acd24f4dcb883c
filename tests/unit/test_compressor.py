"""Extractive compression: honours the ratio, keeps the question and the key facts (no model needed)."""

from __future__ import annotations

import pytest

from ech0_moe.compressor import ExtractiveCompressor, split_question
from ech0_moe.text import count_tokens

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
    c = ExtractiveCompressor().compress("When was the Hubble Space Telescope launched?", [DOC], target=ratio)
    assert c.original_tokens > 200
    assert abs(c.ratio - ratio) <= 0.05
    assert c.question == "When was the Hubble Space Telescope launched?"
    assert count_tokens(c.prompt()) > 0


def test_keeps_the_answer_and_drops_filler() -> None:
    c = ExtractiveCompressor().compress("When was the Hubble Space Telescope launched?", [DOC], target=0.3)
    assert "1990" in c.context
    assert "Basically" not in c.context


def test_short_inputs_are_left_alone() -> None:
    c = ExtractiveCompressor().compress("What is 2 + 2?", [], target=0.3)
    assert c.ratio == 1.0 and c.prompt() == "What is 2 + 2?"


def test_split_question_finds_the_question() -> None:
    preamble, question = split_question("I have a circuit. It has two resistors. What is the total resistance? Thanks.")
    assert question == "What is the total resistance?"
    assert "two resistors" in preamble


def test_llmlingua_without_the_package_is_one_clear_error() -> None:
    from ech0_moe.compressor import LLMLinguaCompressor
    from ech0_moe.errors import Ech0Error

    with pytest.raises(Ech0Error, match="llmlingua"):
        LLMLinguaCompressor()


def test_llm_compression_falls_back_when_a_fact_is_dropped() -> None:
    from ech0_moe.compressor import LLMCompressor

    forgetful = LLMCompressor(lambda messages, n: "The Hubble telescope is in space.")
    c = forgetful.compress("When was the Hubble Space Telescope launched?", [DOC], target=0.3)
    assert c.method == "extractive (llm dropped a fact)" and "1990" in c.context
    quoted = lambda messages: " ".join(x[2:] for x in messages[1]["content"].splitlines() if x.startswith("> "))  # noqa: E731
    faithful = LLMCompressor(lambda messages, n: quoted(messages))
    c = faithful.compress("When was the Hubble Space Telescope launched?", [DOC], target=0.3)
    assert c.method == "llm" and "1990" in c.context and c.prompt().startswith("<reference-data")


def test_lexical_query_terms_drop_stopwords_and_repeats() -> None:
    from ech0_moe.memory.lexical import query_terms

    assert query_terms("What is the QX-4471 gasket, and what is it for?") == ["qx", "4471", "gasket"]
