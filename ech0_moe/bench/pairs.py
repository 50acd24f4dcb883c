"""Answer pairs derived from public exam data (MMLU), for `bench vote`.

For each question, its gold option and one other option, in the forms a model writes an answer
in ("X", "X.", "The answer is X.", "It is X.", "Answer: X", lower case): two forms of the gold
are a "same" pair, the gold and another option a "different" one. None of it is written by us:
the options are the exam's own, so "different" pairs are the near misses its authors chose
(DNA / RNA, O(log n) / O(n), "True, False" / "True, True"). The split into `tune` and `test`
is by a hash of the question, fixed before any rule was changed on it.
"""

from __future__ import annotations

import random
import zlib
from typing import Any

from ech0_moe.choices import LETTERS
from ech0_moe.vote import normalise

FORMS = ("{x}", "{x}.", "The answer is {x}.", "It is {x}.", "Answer: {x}", "{lower}")
SEED = 23


def split_of(question: str) -> str:
    """`tune` or `test`, by a hash of the question text (stable across runs and machines)."""
    return "tune" if zlib.crc32(question.encode("utf-8")) % 2 == 0 else "test"


def _form(template: str, text: str) -> str:
    text = text.strip().rstrip(".")
    return template.format(x=text, lower=text.lower())


def derive(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One "same" and one "different" pair per question whose options differ after normalising."""
    rng = random.Random(SEED)
    pairs: list[dict[str, Any]] = []
    for row in rows:
        choices = [str(c) for c in row.get("choices", [])]
        answer = str(row.get("answer", ""))
        if len(choices) < 2 or answer not in LETTERS[: len(choices)]:
            continue
        if len({normalise(c) for c in choices}) < len(choices) or not all(normalise(c) for c in choices):
            continue
        gold = choices[LETTERS.index(answer)]
        other = rng.choice([c for c in choices if c != gold])
        fa, fb = rng.sample(FORMS, 2)
        fc = rng.choice(FORMS)
        base = {"question": row["question"], "split": split_of(row["question"]), "subject": row.get("subject", "")}
        pairs.append({**base, "a": _form(fa, gold), "b": _form(fb, gold), "same": True})
        pairs.append({**base, "a": _form(fa, gold), "b": _form(fc, other), "same": False})
    return pairs
