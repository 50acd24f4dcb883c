"""Query-aware extractive prompt compression.

The question is always kept verbatim. The rest (retrieved contexts and any
preamble in the query) is cut to ``target`` (the requested kept fraction) of the original token count:
filler phrases go first, then whole sentences are kept in order of relevance
to the question (term overlap weighted by rarity, with a bonus for numbers,
formulas and named entities), and the last partial sentence keeps its most
informative words so the achieved ratio lands on the requested one.
Tokens are whitespace-separated words; `Compressed.ratio` is the achieved fraction.

Also here: `LLMCompressor` (an expert rewrites, checked against the extractive
result's facts) and `LLMLinguaCompressor` (when LLMLingua-2 is installed).
"""

from __future__ import annotations

import math
import os
import re
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Protocol

from ech0_moe.errors import Ech0Error
from ech0_moe.safety import quote, reference_note
from ech0_moe.text import STOPWORDS, count_tokens, split_sentences

_WORD = re.compile(r"[A-Za-z][A-Za-z0-9_\-']*|\d")
_NUMBER = re.compile(r"\d")
_FORMULA = re.compile(r"[=+\-*/^<>≤≥∑∫√]|\b[a-z]\(|\d[a-z]\b")
FILLERS = (
    "it is worth noting that",
    "it should be noted that",
    "it is important to note that",
    "needless to say",
    "as a matter of fact",
    "in other words",
    "for what it's worth",
    "at the end of the day",
    "basically",
    "actually",
    "essentially",
    "really",
    "very",
    "quite",
    "just",
    "of course",
    "please",
    "kindly",
)
_FILLER_RE = re.compile(r"\b(?:" + "|".join(re.escape(f) for f in FILLERS) + r")\b,?\s*", re.IGNORECASE)


def split_question(query: str) -> tuple[str, str]:
    """Split a query into (preamble, question): the question is the last sentence with '?',
    else the last sentence."""
    sents = split_sentences(query)
    if len(sents) <= 1:
        return "", query.strip()
    idx = max((i for i, s in enumerate(sents) if "?" in s), default=len(sents) - 1)
    return " ".join(sents[:idx] + sents[idx + 1 :]), sents[idx]


def is_key_token(word: str) -> bool:
    """Numbers, formulas and capitalised names: the facts compression must keep."""
    return bool(_NUMBER.search(word) or _FORMULA.search(word) or (word[:1].isupper() and len(word) > 1))


PREAMBLE = -1  # a piece of the query's own text before its question: the asker's words, not memory
ALL = -2  # a piece made from every context at once (an LLM's rewrite)


@dataclass(frozen=True)
class Compressed:
    """A compressed prompt and how much it shrank; `pieces` are the kept text by where it came
    from (a context's index, `PREAMBLE` or `ALL`), in order."""

    context: str
    question: str
    original_tokens: int
    compressed_tokens: int
    seconds: float
    method: str = "extractive"
    pieces: tuple[tuple[int, str], ...] = ()

    @property
    def ratio(self) -> float:
        """Achieved ratio: compressed tokens / original tokens (1.0 = unchanged)."""
        return round(self.compressed_tokens / self.original_tokens, 4) if self.original_tokens else 1.0

    def prompt(self, sources: list[str] | None = None) -> str:
        """The text the expert sees: what came from memory quoted as data, each piece under its
        provenance (`sources`, one per context; `safety.quote`), then the asker's own preamble,
        then the question."""
        sources = sources or []

        def origin(i: int) -> str:
            if i == ALL:
                return "condensed from: " + ("; ".join(sources) or "retrieved text")
            return sources[i] if i < len(sources) else "retrieved text"

        pieces = self.pieces or ((ALL, self.context),)
        memory = [(origin(i), text) for i, text in pieces if i != PREAMBLE and text.strip()]
        own = " ".join(text for i, text in pieces if i == PREAMBLE).strip()
        parts = ([quote(memory)] if memory else []) + ([own] if own else [])
        return "\n\n".join([*parts, f"Question: {self.question}"]) if parts else self.question


COMPRESSION_METHODS = ("extractive", "llm", "llmlingua")


class Compressor(Protocol):
    """Shrinks a prompt to about `target` of its tokens, keeping the question verbatim."""

    def compress(self, query: str, contexts: list[str] | None = None, target: float = 0.5) -> Compressed: ...


class ExtractiveCompressor:
    """Keeps the sentences (and, at the margin, the words) that matter most to the question."""

    def __init__(self, min_tokens: int = 48) -> None:
        self.min_tokens = min_tokens

    def _sentence_scores(self, sentences: list[str], question: str) -> list[float]:
        docs = [{w.lower() for w in _WORD.findall(s)} - STOPWORDS for s in sentences]
        df = Counter(w for d in docs for w in d)
        n = len(sentences)
        q_terms = {w.lower() for w in _WORD.findall(question)} - STOPWORDS
        scores = []
        for i, (s, terms) in enumerate(zip(sentences, docs, strict=True)):
            overlap = sum(math.log(1 + n / df[w]) for w in terms & q_terms)
            words = s.split()
            key = sum(1 for w in words if is_key_token(w)) / max(1, len(words))
            scores.append(overlap + 1.5 * key + 0.3 / (1 + i))
        return scores

    @staticmethod
    def _squeeze(sentence: str, budget: int, q_terms: set[str]) -> str:
        """Keep the `budget` most informative words of a sentence, in order."""
        words = sentence.split()
        ranked = sorted(
            range(len(words)),
            key=lambda i: (
                -(
                    3 * is_key_token(words[i])
                    + 2 * (words[i].lower().strip(".,;:()") in q_terms)
                    + (words[i].lower().strip(".,;:()") not in STOPWORDS)
                ),
                i,
            ),
        )
        keep = sorted(ranked[:budget])
        return " ".join(words[i] for i in keep)

    def compress(self, query: str, contexts: list[str] | None = None, target: float = 0.5) -> Compressed:
        """Compress `contexts` plus the query preamble to `target` of their tokens; keep the question."""
        t0 = time.perf_counter()
        target = min(1.0, max(0.05, target))
        preamble, question = split_question(query)
        units = [*enumerate(contexts or []), (PREAMBLE, preamble)]
        material = "\n".join(t for _, t in units).strip()
        original = count_tokens(material) + count_tokens(question)
        if original < self.min_tokens or target >= 1.0:
            whole = tuple((i, t.strip()) for i, t in units if t.strip())
            return Compressed(material, question, original, original, time.perf_counter() - t0, "none", whole)
        budget = max(0, round(target * original) - count_tokens(question))
        sentences, origins = [], []  # each sentence, and the unit it came from
        for i, t in units:
            for sentence in split_sentences(_FILLER_RE.sub("", t)):
                sentences.append(sentence)
                origins.append(i)
        scores = self._sentence_scores(sentences, question)
        order = sorted(range(len(sentences)), key=lambda i: -scores[i])
        q_terms = {w.lower() for w in _WORD.findall(question)} - STOPWORDS
        chosen: dict[int, str] = {}
        used = 0
        for i in order:
            size = count_tokens(sentences[i])
            if used + size <= budget:
                chosen[i] = sentences[i]
                used += size
            elif budget - used >= 3:
                chosen[i] = self._squeeze(sentences[i], budget - used, q_terms)
                used = budget
            if used >= budget:
                break
        context = " ".join(chosen[i] for i in sorted(chosen))
        pieces: list[tuple[int, str]] = []
        for i in sorted(chosen):
            if pieces and pieces[-1][0] == origins[i]:
                pieces[-1] = (origins[i], f"{pieces[-1][1]} {chosen[i]}")
            else:
                pieces.append((origins[i], chosen[i]))
        return Compressed(
            context=context,
            question=question,
            original_tokens=original,
            compressed_tokens=count_tokens(context) + count_tokens(question),
            seconds=time.perf_counter() - t0,
            pieces=tuple(pieces),
        )


Chat = Callable[[list[dict[str, str]], int], str]


class LLMCompressor:
    """Asks an expert (the general one) to shorten the context, and checks its work:
    if the rewrite drops any number, name or formula the extractive result kept,
    the extractive result is used instead (method ``extractive (llm dropped a fact)``)."""

    def __init__(self, chat: Chat, fallback: ExtractiveCompressor | None = None) -> None:
        self.chat = chat
        self.fallback = fallback or ExtractiveCompressor()

    def compress(self, query: str, contexts: list[str] | None = None, target: float = 0.5) -> Compressed:
        t0 = time.perf_counter()
        base = self.fallback.compress(query, contexts, target)
        if base.method == "none" or not base.context:
            return base
        budget = max(8, base.compressed_tokens - count_tokens(base.question))
        block = quote([("text to shorten", base.context)])  # retrieved text: data, never instructions
        messages = [
            {
                "role": "system",
                "content": "You shorten text. Keep every number, name and formula. Output only the shortened text. "
                + reference_note(block),
            },
            {
                "role": "user",
                "content": f"{block}\n\nShorten the text above to at most {budget} words, keeping what answers: "
                f"{base.question}",
            },
        ]
        text = " ".join(self.chat(messages, budget * 2).split()[:budget])
        facts = {w.strip(".,;:()[]") for w in base.context.split() if is_key_token(w)}
        if not text or any(f not in text for f in facts):
            return replace(base, method="extractive (llm dropped a fact)", seconds=time.perf_counter() - t0)
        return Compressed(
            context=text,
            question=base.question,
            original_tokens=base.original_tokens,
            compressed_tokens=count_tokens(text) + count_tokens(base.question),
            seconds=time.perf_counter() - t0,
            method="llm",
            pieces=((ALL, text),),
        )


class LLMLinguaCompressor:
    """LLMLingua-2 token classification, when the `llmlingua` package and its model
    (``ECH0_LLMLINGUA_MODEL``, already in the local Hugging Face cache) are installed."""

    def __init__(self) -> None:
        try:
            from llmlingua import PromptCompressor  # type: ignore[import-not-found]
        except ImportError:
            raise Ech0Error(
                "compression_method 'llmlingua' needs the llmlingua package and a local LLMLingua-2 model"
            ) from None
        model = os.environ.get("ECH0_LLMLINGUA_MODEL", "microsoft/llmlingua-2-xlm-roberta-large-meetingbank")
        try:
            self._compressor = PromptCompressor(model_name=model, use_llmlingua2=True, device_map="cpu")
        except Exception as exc:  # the model is missing from the local cache, or incompatible
            raise Ech0Error(f"LLMLingua-2 model {model!r} could not be loaded: {exc}") from None

    def compress(self, query: str, contexts: list[str] | None = None, target: float = 0.5) -> Compressed:
        t0 = time.perf_counter()
        preamble, question = split_question(query)
        material = "\n".join([*(contexts or []), preamble]).strip()
        original = count_tokens(material) + count_tokens(question)
        if not material:
            return Compressed("", question, original, original, time.perf_counter() - t0, "none")
        result = self._compressor.compress_prompt([material], rate=target, force_tokens=["\n", "?"])
        text = result["compressed_prompt"]
        return Compressed(
            text,
            question,
            original,
            count_tokens(text) + count_tokens(question),
            time.perf_counter() - t0,
            "llmlingua",
            ((ALL, text),),
        )
