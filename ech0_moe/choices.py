"""Multiple-choice questions: the expert picks an option, scored so formatting cannot lose it.

With llama.cpp the expert reads the question and the lettered options and the pick is the
letter with the highest log-probability as the first token of its answer (one forward pass,
nothing generated: `method` "loglik"). Runtimes without prompt log-probabilities (Ollama,
Ray Serve replicas here) generate a short answer and the first standalone letter is read
from it (`method` "letter"; -1 when there is none).
"""

from __future__ import annotations

import re
from collections.abc import Callable

from ech0_moe.errors import InputError
from ech0_moe.serving.records import Choice, Message, Reply

LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
MAX_CHOICE_CHARS = 2_000
LETTER_ANSWER_TOKENS = 8  # the "letter" method's answer length


def check_choices(choices: object) -> list[str]:
    """The options of a multiple-choice question (none = an open question); `InputError` if malformed."""
    if choices in (None, [], ()):
        return []
    if not isinstance(choices, list | tuple) or not all(isinstance(c, str) and c.strip() for c in choices):
        raise InputError("choices must be a list of non-empty strings")
    if not 2 <= len(choices) <= len(LETTERS):
        raise InputError(f"choices: give 2 to {len(LETTERS)} options, got {len(choices)}")
    if any(len(c) > MAX_CHOICE_CHARS for c in choices):
        raise InputError(f"choices: an option is longer than {MAX_CHOICE_CHARS} characters")
    return [c.strip() for c in choices]


def choices_prompt(prompt: str, choices: list[str]) -> str:
    """The user message of a multiple-choice question: the prompt, the lettered options, the ask."""
    options = "\n".join(f"{LETTERS[i]}. {c}" for i, c in enumerate(choices))
    return f"{prompt}\n\n{options}\n\nAnswer with the letter of the correct choice."


def parse_letter(text: str, n: int) -> int:
    """Index of the first standalone option letter in an answer ("B", "(C)", "Answer: D."), or -1."""
    allowed = LETTERS[:n]
    match = re.search(rf"(?<![A-Za-z])([{allowed}])(?![A-Za-z])", text)
    return LETTERS.index(match.group(1)) if match else -1


def choose_by_letter(
    chat: Callable[[list[Message], int], Reply], messages: list[Message], n: int
) -> tuple[Choice, Reply]:
    """The "letter" method: a short generated answer, its first option letter."""
    reply = chat(messages, LETTER_ANSWER_TOKENS)
    return Choice(parse_letter(reply.text, n), (), "letter"), reply
