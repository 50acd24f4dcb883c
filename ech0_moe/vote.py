"""Ensemble voting by meaning: answers that say the same thing pool their route scores.

Whether two answers agree (`Agreement.same`):
- a multiple-choice answer is its option letter, and letters agree when equal;
- else the *final answer* where one can be read: a list of verdicts ("True, False"), a yes/no
  polarity, numbers with their units in one unit system (`quantities`: "100 °C" = "212 °F"
  within the precision given), a formula as written ("O(log n)" is not "O(n)");
- else their content words: the same words, or one answer restating the other, agree; a word
  swapped in place (Canberra / Sydney, left / right atrium) or an item added differs;
- else, for two longer answers only, their MiniLM cosine similarity above a threshold chosen on
  labelled answer pairs (`ech0-moe bench vote`); never across a negation.

Each ensemble answer gets a vote key: the key of the first earlier answer it agrees with, else
its own (`Agreement.key`), so the majority stop and `weighted_vote` count meaning, not spelling.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Callable, Sequence
from difflib import SequenceMatcher
from typing import Any

import numpy as np

from ech0_moe.quantities import agree, quantities
from ech0_moe.text import STOPWORDS

# cosine of the documents encoder above which two longer free-text answers agree: the best mean
# accuracy over the tuning parts of `ech0-moe bench vote` (printed as threshold_best_on_tuning)
AGREE_SIMILARITY = 0.7
SHORT_ANSWER_WORDS = 4  # a "named" final answer is at most this many words
STEM_CHARS = 6  # words compared by their first characters: plural, -ion/-ia, -ed/-ing alike
CONTRAST_WORDS = 1.0  # swapped words per shared word up to which two answers are a near miss

_WORDS = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")
_PAREN = re.compile(r"(?:^|(?<=\s))\([^)]*\)")  # a gloss "(N)", "(from natrium)"; not "O(n)"
_LEAD = re.compile(
    r"^(?:(?:so|thus|therefore|hence)\b[,:]?\s*)?"
    r"(?:(?:the\s+)?(?:final\s+|correct\s+)?answer\s*(?:is\b|:)[:\s]*|(?:it|this|that)\s+(?:is|was)\b\s*|it's\s+)",
    re.IGNORECASE,
)
_VERDICT = r"(?:not\s+)?(?:true|false|yes|no|wrong|right|valid|invalid|correct|incorrect)\b"
_VERDICTS = re.compile(rf"^{_VERDICT}(?:\s*[,;/|]\s*{_VERDICT})+", re.IGNORECASE)
_SYMBOLS = re.compile(r"[()\[\]^*/<>=+]")
# stopwords that change what an answer says, so they are compared like content words
_KEPT = frozenset(
    "same more most less few only over under up down above below all any both each other not no i".split()
)
# common formulas and symbols answered by name as often as by symbol ("CO2" / "carbon dioxide")
_NAMED = {
    symbol: tuple(name.split())
    for symbol, name in {
        "co2": "carbon dioxide",
        "h2o": "water",
        "o2": "oxygen",
        "n2": "nitrogen",
        "h2": "hydrogen",
        "ch4": "methane",
        "nh3": "ammonia",
        "nacl": "sodium chloride",
        "hcl": "hydrochloric acid",
        "h2so4": "sulfuric acid",
        "dna": "deoxyribonucleic acid",
        "rna": "ribonucleic acid",
        "atp": "adenosine triphosphate",
    }.items()
}
_FORMULA = re.compile(r"\w+\([^)]*\)")  # "O(n log n)", "f(x)"
_LIST = re.compile(r"\band\b|\bboth\b|\bor\b|;|&", re.IGNORECASE)
# words that frame an answer rather than say it ("The answer is ...", "Answer: ...")
_FRAME = frozenset("answer correct final option choice".split())
_POLARITY = re.compile(r"^\s*(yes|no|true|false|correct|incorrect)\b[\s.,!:;-]*", re.IGNORECASE)
# a statement that answers "no" without a "not": "It should be avoided: unsafe in pregnancy."
_REFUSING = re.compile(
    r"\b(?:avoid(?:ed)?|unsafe|forbidden|prohibited|impossible|inadvisable|never|false|incorrect|untrue)\b",
    re.IGNORECASE,
)
_NEGATION = re.compile(
    r"\b(?:not|no|never|cannot|can't|isn't|aren't|doesn't|don't|won't|wasn't|neither|nor|none)\b|n't\b", re.IGNORECASE
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
    return " ".join(_singular(w) for w in words)


def _singular(word: str) -> str:
    return word[:-1] if len(word) > 3 and word.endswith("s") else word


def _stem(word: str) -> str:
    """A crude stem: "newtons", "newton" -> "newton"; "mitochondria", "mitochondrion" -> "mitoch"."""
    return _singular(word)[:STEM_CHARS]


def _content_sequence(text: str) -> list[str]:
    """Stems of the words that carry content, in order, each once (stopwords and answer frames
    dropped; words like "same", "more", "only", "not" kept: they change an answer)."""
    words = [n for w in _WORDS.findall(_PAREN.sub(" ", _strip(text)).lower()) for n in _NAMED.get(w, (w,))]
    return list(dict.fromkeys(_stem(w) for w in words if w in _KEPT or (w not in STOPWORDS and w not in _FRAME)))


def _content_words(text: str) -> set[str]:
    return set(_content_sequence(text))


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
        la, lb = _verdicts(a), _verdicts(b)
        if la or lb:  # "True, False": a list of verdicts agrees only with the same list
            return la == lb
        pa, pb = polarity(a), polarity(b)
        if pa and pb:
            return pa == pb
        if pa or pb:  # "Yes." vs a statement: the statement's polarity is whether it negates
            yes_no, statement = (a, b) if pa else (b, a)
            explicit = _negated(statement) or bool(_REFUSING.search(statement))
            said = "no" if explicit else "yes"
            rest = _POLARITY.sub("", _strip(yes_no), count=1).strip()
            # a statement that says no outright agrees with "No, <short reason>"; one that merely
            # asserts something must say what the yes/no answer's reason says
            restated = not rest or (explicit and bool(short_answer(rest))) or self._close(rest, statement, question)
            return said == (pa or pb) and restated
        qa, qb = quantities(a), quantities(b)
        if qa and qb:
            return agree(qa, qb) and _words(a, b) != "contrast"
        if qa or qb:  # a number on one side only: the other must restate it in its words
            return _negated(a) == _negated(b) and _words(a, b, question) in ("equal", "contained")
        return self._close(a, b, question)

    def _close(self, a: str, b: str, question: str) -> bool:
        """Free text: the same content words, or one adds no item to the other; a word swapped
        for another (left/right ventricle, Canberra/Sydney) differs; otherwise close embeddings
        of two longer answers agree. Never across a negation."""
        if _negated(a) != _negated(b):
            return False
        if (
            _SYMBOLS.search(_PAREN.sub(" ", f"{a} {b}")) and short_answer(a) and short_answer(b)
        ):  # "O(n)", "[HNO2] > [NO2-]"
            return _compact(a) == _compact(b)
        relation = _words(a, b, question)
        if relation in ("equal", "contained"):
            return True
        if relation in ("contrast", "added") or short_answer(a) or short_answer(b):
            return False
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


def _compact(text: str) -> str:
    return re.sub(r"\s+", "", _PAREN.sub(" ", _strip(text)).lower()).rstrip(".")


def _verdicts(text: str) -> tuple[str, ...]:
    """("true", "false") for "True, False" (two or more verdicts in a row), else ()."""
    m = _VERDICTS.match(_strip(text))
    return tuple(re.sub(r"\s+", " ", v.strip().lower()) for v in re.split(r"[,;/|]", m.group())) if m else ()


def _words(a: str, b: str, question: str = "") -> str:
    """How the answers' content words relate: "equal"; "contained" (one restates the other);
    "added" (the longer lists more items: "and", "or", "both"); "contrast" (the same
    words with a few swapped for others in place: left/right ventricle, exports minus imports);
    "apart" (nothing shared, or mostly other words). Answers apart on their own words may still
    agree beyond the question's words ("The Odyssey was written by Homer." / "Homer wrote it.")."""
    fa, fb = {_compact(f) for f in _FORMULA.findall(a)}, {_compact(f) for f in _FORMULA.findall(b)}
    if fa and fb and not fa & fb:
        return "contrast"  # "O(log n)" / "It runs in O(n log n) time."
    sa, sb = _content_sequence(a), _content_sequence(b)
    relation = _relation(sa, sb, a, b)
    asked = _content_words(question)
    if relation == "apart" and asked:
        ra, rb = [w for w in sa if w not in asked], [w for w in sb if w not in asked]
        if set(ra) - _KEPT and set(rb) - _KEPT and _relation(ra, rb, a, b) in ("equal", "contained"):
            return "contained"
    return relation


def _relation(sa: list[str], sb: list[str], a: str, b: str) -> str:
    if sa == sb:
        return "equal"
    wa, wb = set(sa), set(sb)
    if wa == wb:
        return "contrast"  # the same words in another order
    shared = wa & wb
    if not shared:
        return "apart"
    ops = SequenceMatcher(None, sa, sb, autojunk=False).get_opcodes()
    # a swap: in one place, words of each answer that the other lacks anywhere
    swaps = [(len(set(sa[i1:i2]) - wb), len(set(sb[j1:j2]) - wa)) for tag, i1, i2, j1, j2 in ops if tag == "replace"]
    swapped = sum(x + y for x, y in swaps if x and y)
    if swapped:
        return "contrast" if swapped <= CONTRAST_WORDS * len(shared) else "apart"
    if wa <= wb or wb <= wa:
        longer, extra = (b, wb - wa) if wa <= wb else (a, wa - wb)
        return "added" if _adds_items(longer, shared, extra) else "contained"
    return "apart"


def _adds_items(text: str, shared: set[str], extra: set[str]) -> bool:
    """Whether a list marker ("and", "or", "both") joins the shared words to new ones:
    "Pupillary constriction and vasodilation" adds to "Pupillary constriction"; "its divisors
    are 1 and 17" adds nothing to "17 is prime"."""
    parts = [_content_words(p) for p in _LIST.split(_strip(text))]
    return len(parts) > 1 and any(p & extra and not p & shared for p in parts) and any(p & shared for p in parts)


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
