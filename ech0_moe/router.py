"""Pick the expert for a query, without loading any expert model.

`Router` scores each expert by embedding similarity (offline MiniLM) between
the query and the expert's description and example utterances; the keyword
router is the fallback (and the baseline the benchmark compares against).
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from ech0_moe.config import ExpertSpec

_WORD = re.compile(r"[a-z][a-z0-9_+\-]*")


@dataclass(frozen=True)
class RouteDecision:
    """The chosen expert plus everything needed to explain the choice."""

    expert: str
    domain: str
    scores: dict[str, float]
    confidence: float
    seconds: float
    method: str
    ranked: list[str] = field(default_factory=list)
    reason: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def softmax_confidence(scores: dict[str, float], temperature: float) -> dict[str, float]:
    """Turn raw scores into probabilities (used as confidence)."""
    if not scores:
        return {}
    top = max(scores.values())
    exp = {k: math.exp((v - top) / temperature) for k, v in scores.items()}
    total = sum(exp.values())
    return {k: v / total for k, v in exp.items()}


class KeywordRouter:
    """Counts keyword hits per expert; ties and no hits go to the general expert."""

    method = "keyword"

    def __init__(self, experts: Sequence[ExpertSpec]) -> None:
        self.experts = list(experts)

    def scores(self, query: str) -> dict[str, float]:
        words = set(_WORD.findall(query.lower()))
        text = " " + " ".join(_WORD.findall(query.lower())) + " "
        out: dict[str, float] = {}
        for e in self.experts:
            hits = sum(1 for k in e.keywords if (k in words if " " not in k else f" {k} " in text))
            out[e.name] = float(hits)
        return out


class EmbeddingRouter:
    """Cosine similarity of the query to each expert's description and examples (max and centroid)."""

    method = "embedding"

    def __init__(self, experts: Sequence[ExpertSpec]) -> None:
        from ech0_moe.embeddings import embed

        self._embed = embed
        self.experts = list(experts)
        self._examples: list[np.ndarray] = []
        self._centroids: list[np.ndarray] = []
        for e in self.experts:
            vecs = embed(e.routing_texts)
            self._examples.append(vecs)
            c = vecs.mean(axis=0)
            self._centroids.append(c / (np.linalg.norm(c) or 1.0))

    def scores(self, query: str) -> dict[str, float]:
        q = self._embed([query])[0]
        out: dict[str, float] = {}
        for e, ex, c in zip(self.experts, self._examples, self._centroids, strict=True):
            out[e.name] = float(0.5 * (ex @ q).max() + 0.5 * (c @ q))
        return out


class Router:
    """Routes a query to one expert (or the top k), falling back to `general` when unsure."""

    def __init__(
        self,
        experts: Sequence[ExpertSpec],
        general_expert: str,
        *,
        method: str = "embedding",
        min_confidence: float = 0.25,
        temperature: float = 0.05,
    ) -> None:
        self.experts = {e.name: e for e in experts}
        self.general_expert = general_expert
        self.min_confidence = min_confidence
        self.temperature = temperature
        self.keyword = KeywordRouter(experts)
        self.scorer: KeywordRouter | EmbeddingRouter = (
            EmbeddingRouter(experts) if method == "embedding" else self.keyword
        )

    def route(self, query: str, top_k: int = 1) -> RouteDecision:
        t0 = time.perf_counter()
        raw = self.scorer.scores(query)
        method = self.scorer.method
        if method == "keyword" or max(raw.values(), default=0.0) <= 0.0:
            kw = self.keyword.scores(query)
            if max(kw.values(), default=0.0) > 0.0 or method == "keyword":
                raw, method = kw, "keyword"
        temperature = self.temperature if method == "embedding" else 0.5
        probs = softmax_confidence(raw, temperature)
        ranked = sorted(probs, key=lambda n: (-probs[n], n != self.general_expert))
        best = ranked[0]
        confidence = probs[best]
        reason = f"best {method} score"
        if method == "keyword" and raw[best] == 0:
            best, reason = self.general_expert, "no keyword matched: general expert"
        elif confidence < self.min_confidence and best != self.general_expert:
            reason = f"confidence {confidence:.2f} < {self.min_confidence}: general expert"
            best = self.general_expert
        if best != ranked[0]:
            ranked = [best, *[n for n in ranked if n != best]]
        return RouteDecision(
            expert=best,
            domain=self.experts[best].domain,
            scores={n: round(probs[n], 4) for n in ranked},
            confidence=round(confidence, 4),
            seconds=round(time.perf_counter() - t0, 6),
            method=method,
            ranked=ranked[: max(1, top_k)],
            reason=reason,
        )
