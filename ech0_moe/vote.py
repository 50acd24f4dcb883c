"""Ensemble voting by meaning: answers that say the same thing pool their route scores.

Whether two answers agree (`Agreement.same`):
- a multiple-choice answer is its option letter, and letters agree when equal;
- else the *final answer* where one can be read: a yes/no (or true/false) polarity, a number
  with its unit ("12 V", "about 300,000 km per second" = "3 x 10^8 m/s" within the precision
  given), or a short named answer ("It is the newton (N)." = "Newton.");
- else (free text) their MiniLM embeddings' cosine similarity, above a threshold chosen on
  labelled answer pairs (`ech0-moe bench vote`), and never across a negation.

Each ensemble answer gets a vote key: the key of the first earlier answer it agrees with, else
its own (`Agreement.key`), so the majority stop and `weighted_vote` count meaning, not spelling.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ech0_moe.text import STOPWORDS

# cosine of the documents encoder above which two free-text answers agree: the best pair
# accuracy on the `fit` half of benchmarks/answer-pairs.jsonl, the lowest of the tied best
# (`ech0-moe bench vote` prints it as threshold_best_on_fit)
AGREE_SIMILARITY = 0.725
SHORT_ANSWER_WORDS = 4  # a "named" final answer is at most this many words

_WORDS = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")
_PAREN = re.compile(r"\([^)]*\)")
_LEAD = re.compile(
    r"^(?:(?:so|thus|therefore|hence)\b[,:]?\s*)?"
    r"(?:(?:the\s+)?(?:final\s+|correct\s+)?answer\s+is\b[:\s]*|(?:it|this|that)\s+(?:is|was)\b\s*|it's\s+)",
    re.IGNORECASE,
)
_POLARITY = re.compile(r"^\s*(yes|no|true|false|correct|incorrect)\b[\s.,!:;-]*", re.IGNORECASE)
_NEGATION = re.compile(
    r"\b(?:not|no|never|cannot|can't|isn't|aren't|doesn't|don't|won't|wasn't|neither|nor|none)\b|n't\b", re.IGNORECASE
)
_APPROX = re.compile(r"\b(?:about|roughly|approximately|around|nearly|almost|some|circa)\b|~|≈", re.IGNORECASE)
_NUMBER = re.compile(
    r"(?<![\w.\-^])([-+]?\d[\d,]*(?:\.\d+)?)(?:\s*(?:x|×|\*)\s*10\s*\^\s*([-+]?\d+))?([a-z](?![a-z]))?", re.IGNORECASE
)
_WORD_NUMBERS = {
    w: i
    for i, w in enumerate(
        "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
        "sixteen seventeen eighteen nineteen twenty".split()
    )
} | {"thirty": 30, "forty": 40, "fifty": 50, "sixty": 60, "seventy": 70, "eighty": 80, "ninety": 90, "hundred": 100}
# unit phrases after a number, longest first, to (canonical unit, factor to it)
_UNITS: dict[str, tuple[str, float]] = {
    "metres per second": ("m/s", 1),
    "meters per second": ("m/s", 1),
    "kilometres per second": ("m/s", 1000),
    "kilometers per second": ("m/s", 1000),
    "km per second": ("m/s", 1000),
    "km per hour": ("m/s", 1 / 3.6),
    "km/s": ("m/s", 1000),
    "km/h": ("m/s", 1 / 3.6),
    "m/s": ("m/s", 1),
    "degrees celsius": ("°c", 1),
    "degrees fahrenheit": ("°f", 1),
    "°c": ("°c", 1),
    "°f": ("°f", 1),
    "c": ("°c", 1),
    "f": ("°f", 1),
    "degrees": ("°", 1),
    "°": ("°", 1),
    "volts": ("v", 1),
    "volt": ("v", 1),
    "v": ("v", 1),
    "amps": ("a", 1),
    "amperes": ("a", 1),
    "amp": ("a", 1),
    "a": ("a", 1),
    "ohms": ("ohm", 1),
    "ohm": ("ohm", 1),
    "ω": ("ohm", 1),
    "newtons": ("n", 1),
    "n": ("n", 1),
    "joules": ("j", 1),
    "j": ("j", 1),
    "watts": ("w", 1),
    "w": ("w", 1),
    "km": ("m", 1000),
    "metres": ("m", 1),
    "meters": ("m", 1),
    "m": ("m", 1),
    "kg": ("kg", 1),
    "years": ("year", 1),
    "year": ("year", 1),
    "days": ("day", 1),
    "hours": ("hour", 1),
    "minutes": ("minute", 1),
    "seconds": ("second", 1),
    "bits": ("bit", 1),
    "bytes": ("byte", 1),
    "%": ("%", 1),
    "percent": ("%", 1),
}
_UNIT_RE = re.compile(
    r"\s*(" + "|".join(re.escape(u) for u in sorted(_UNITS, key=len, reverse=True)) + r")(?![a-z])", re.IGNORECASE
)


def normalise(text: str) -> str:
    """Lower-case words and numbers only (for comparing texts, not meanings)."""
    return " ".join(_WORDS.findall(text.lower()))


def _strip(text: str) -> str:
    """The answer without parentheses and a leading "the answer is" / "it is"."""
    text = _PAREN.sub(" ", text).strip()
    while (m := _LEAD.match(text)) and m.end():
        text = text[m.end() :].strip()
    return text


@dataclass(frozen=True)
class Quantity:
    value: float
    unit: str
    step: float  # the precision the answer gave: values within step / 2 agree
    term: str = ""  # "2x": a number glued to a symbol is compared as written

    def agrees(self, other: Quantity) -> bool:
        if self.term or other.term:
            return self.term == other.term
        if self.unit and other.unit and self.unit != other.unit:
            return False
        return abs(self.value - other.value) <= max(self.step, other.step) / 2 + 1e-9 * abs(self.value)


def _quantity(text: str) -> Quantity | None:
    """The answer's number: the last one of its first sentence (after "=", the result), with its unit."""
    body = _PAREN.sub(" ", text)
    first = re.split(r"(?<=[.!?])\s+(?=[A-Z])", body.strip())[0]
    approx = bool(_APPROX.search(first))
    found = list(_NUMBER.finditer(first))
    if not found:
        words = [w for w in _WORDS.findall(first.lower()) if w in _WORD_NUMBERS]
        if not words:
            return None
        unit = _UNIT_RE.match(first.lower(), first.lower().rfind(words[-1]) + len(words[-1]))
        canon = _UNITS[unit.group(1).lower()] if unit else ("", 1.0)
        return Quantity(_WORD_NUMBERS[words[-1]] * canon[1], canon[0], canon[1] * 0.5)
    m = found[-1]
    digits, exponent, glued = m.group(1).replace(",", ""), m.group(2), m.group(3)
    if glued and not _UNIT_RE.fullmatch(glued):
        return Quantity(0.0, "", 0.0, term=(digits + glued).lower())
    value = float(digits) * (10 ** int(exponent) if exponent else 1)
    decimals = len(digits.split(".")[1]) if "." in digits else 0
    step = 10.0**-decimals
    if approx and not decimals:  # "about 300,000": the trailing zeros are not significant
        stripped = digits.lstrip("+-").rstrip("0")
        step = 10.0 ** (len(digits.lstrip("+-")) - len(stripped))
    if exponent:
        mantissa = digits.lstrip("+-")
        step = 10.0 ** (int(exponent) - (len(mantissa.split(".")[1]) if "." in mantissa else 0))
    unit = _UNIT_RE.match(first, m.end())
    name, factor = _UNITS[unit.group(1).lower()] if unit else ("", 1.0)
    return Quantity(value * factor, name, step * factor)


def polarity(text: str) -> str:
    """ "yes" or "no" when the answer starts with one (true/false, correct/incorrect alike), else ""."""
    m = _POLARITY.match(_strip(text))
    if not m:
        return ""
    return "yes" if m.group(1).lower() in ("yes", "true", "correct") else "no"


def _negated(text: str) -> bool:
    return bool(_NEGATION.search(text))


def short_answer(text: str) -> str:
    """A named final answer ("newton" from "It is the newton (N)."), or "" for a longer answer."""
    words = [w for w in _WORDS.findall(_strip(text).lower()) if w not in ("the", "a", "an")]
    if not words or len(words) > SHORT_ANSWER_WORDS:
        return ""
    return " ".join(w[:-1] if len(w) > 3 and w.endswith("s") else w for w in words)


def _content_words(text: str) -> set[str]:
    """Words that carry content (stopwords dropped, a plural "s" too)."""
    words = _WORDS.findall(_PAREN.sub(" ", text).lower())
    return {w[:-1] if len(w) > 3 and w.endswith("s") else w for w in words if w not in STOPWORDS}


class Agreement:
    """Decides whether two answers mean the same (see the module docstring). `embed` maps texts
    to unit vectors (the knowledge base's MiniLM); without it, free texts agree only when equal."""

    def __init__(
        self, embed: Callable[[list[str]], np.ndarray] | None = None, threshold: float = AGREE_SIMILARITY
    ) -> None:
        self._embed = embed
        self.threshold = threshold

    def similarity(self, a: str, b: str) -> float:
        if self._embed is None:
            return 1.0 if normalise(a) == normalise(b) else 0.0
        try:
            va, vb = self._embed([a, b])
        except Exception:  # no encoder here (a light install, a damaged file): compare texts
            self._embed = None
            return self.similarity(a, b)
        return float(np.dot(va, vb))

    def same(self, a: str, b: str, question: str = "") -> bool:
        """Whether answers `a` and `b` to `question` (an open one) say the same."""
        pa, pb = polarity(a), polarity(b)
        if pa and pb:
            return pa == pb
        if pa or pb:  # "Yes." vs a statement: the statement's polarity is whether it negates
            yes_no, statement = (a, b) if pa else (b, a)
            said = "no" if _negated(statement) else "yes"
            rest = _POLARITY.sub("", _strip(yes_no), count=1).strip()
            return said == (pa or pb) and (not rest or self._close(rest, statement, question))
        qa, qb = _quantity(a), _quantity(b)
        if qa and qb:
            return qa.agrees(qb)
        if (qa is None) != (qb is None):
            return False
        return self._close(a, b, question)

    def _close(self, a: str, b: str, question: str) -> bool:
        """Free text: a short answer shares a word (beyond the question's) with the other, or the
        embeddings are close; never across a negation."""
        if _negated(a) != _negated(b):
            return False
        asked = _content_words(question)
        wa, wb = _content_words(a) - asked, _content_words(b) - asked
        if (short_answer(a) or short_answer(b)) and wa & wb:
            return True
        return self.similarity(a, b) >= self.threshold

    def key(self, answer: str, earlier: Sequence[tuple[str, str]], question: str = "") -> str:
        """The vote key of `answer`: that of the first (key, text) in `earlier` it agrees with,
        else its own (the answer's final answer, or its normalised text)."""
        for key, text in earlier:
            if self.same(answer, text, question):
                return key
        own = polarity(answer) or short_answer(answer) or normalise(answer)[:80]
        taken = {k for k, _ in earlier}
        return own if own not in taken else f"{own} #{len(earlier)}"


def weighted_vote(answers: list[dict[str, Any]]) -> dict[str, Any]:
    """Answers with the same `vote_key` (same meaning) pool their route scores; the winning
    group's answer from its highest-scored expert is the solution."""
    usable = [a for a in answers if a.get("solution")]
    if not usable:
        return {"solution": "", "expert_used": "", "votes": {}}
    weight: dict[str, float] = defaultdict(float)
    for a in usable:
        weight[a["vote_key"]] += float(a.get("route_score", 0.0)) + 1e-6
    best_key = max(weight, key=lambda k: weight[k])
    best = max((a for a in usable if a["vote_key"] == best_key), key=lambda a: a.get("route_score", 0.0))
    return {
        "solution": best["solution"],
        "expert_used": best["expert"],
        "votes": {k: round(v, 4) for k, v in weight.items()},
    }


def pair_scores(labels: Sequence[bool], predicted: Sequence[bool]) -> dict[str, float]:
    """Accuracy, precision and recall of "same meaning" predictions."""
    tp = sum(p and y for p, y in zip(predicted, labels, strict=True))
    fp = sum(p and not y for p, y in zip(predicted, labels, strict=True))
    fn = sum(y and not p for p, y in zip(predicted, labels, strict=True))
    right = sum(p == y for p, y in zip(predicted, labels, strict=True))
    return {
        "accuracy": round(right / max(1, len(labels)), 4),
        "precision": round(tp / (tp + fp), 4) if tp + fp else 0.0,
        "recall": round(tp / (tp + fn), 4) if tp + fn else 0.0,
        "n": len(labels),
    }


__all__ = ["AGREE_SIMILARITY", "Agreement", "normalise", "pair_scores", "weighted_vote"]
