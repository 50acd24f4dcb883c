"""Pick the expert for a query without loading any expert model.

The router encodes the raw query with the offline MiniLM (int8 ONNX, mean+max
pooled: `embeddings.route_features`) and scores every expert of the pool with
`RouterModel`: a class-balanced linear model mixed with a vote of the nearest
fitted examples. The experts are the classes, whatever their number and domains;
`router_fit` fits the model to a pool (its descriptions, examples and labelled data)
when the pool changes and caches it. A model records which questions it saw, so
`bench routing` never scores a question the model was fitted on.

Decisions on top of the scores:
- low confidence (top probability < `min_confidence`) -> the general expert;
- swap-cost awareness: if an already-loaded expert scores within
  `stay_margin` (+ `stay_per_second` x the expected load seconds) of the best,
  stay on it and skip the load;
- top-k for the ensemble.
The keyword router is the baseline the benchmark compares against.
"""

from __future__ import annotations

import functools
import hashlib
import re
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from threadpoolctl import ThreadpoolController

from ech0_moe.config import ExpertSpec, PoolConfig
from ech0_moe.errors import ConfigError, Ech0Error

PACKAGED_MODEL = Path(__file__).resolve().parent / "data" / "router-model.npz"
_WORD = re.compile(r"[a-z][a-z0-9_+\-]*")


def question_id(text: str) -> str:
    """Stable id of a question (whitespace- and case-insensitive)."""
    return hashlib.sha1(" ".join(text.lower().split()).encode()).hexdigest()[:16]


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
    best: str = ""  # the top-scored expert, before fallback or staying
    stayed: bool = False  # kept a loaded expert to avoid a swap

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@functools.cache
def _blas() -> ThreadpoolController:
    return ThreadpoolController()


class RouterModel:
    """Domain probabilities for unit-length routing features x (`route_features`).

    Two views of the same fitted examples, mixed:
    - linear: softmax(W x + b), class-balanced logistic regression;
    - memory: the k nearest fitted examples vote with weight exp(sim / temperature),
      each vote divided by its class's share of the examples (so the 1,000
      `general` questions do not outvote the 14 `engineering` ones).
    The memory keeps the fine structure a linear boundary loses (a `general`
    nutrition question sits next to other nutrition questions, not next to
    biology); measured +2 to +3 points of macro accuracy (README, Benchmarks).
    """

    def __init__(
        self,
        classes: Sequence[str],
        weights: np.ndarray,
        bias: np.ndarray,
        trained_ids: Iterable[str] = (),
        memory: np.ndarray | None = None,
        memory_labels: np.ndarray | None = None,
        *,
        k: int = 20,
        mix: float = 0.6,
        temperature: float = 0.1,
        sharpness: float = 1.0,
        pool_hash: str = "",
    ):
        self.pool_hash = pool_hash  # `router_fit.pool_fingerprint` of the pool it was fitted for
        self.classes = list(classes)
        self.weights = weights.astype(np.float32)
        self.bias = bias.astype(np.float32)
        self.trained_ids = frozenset(trained_ids)
        self.memory = np.zeros((0, self.weights.shape[1]), np.float32) if memory is None else memory.astype(np.float32)
        self.memory_labels = np.zeros(0, np.int64) if memory_labels is None else memory_labels.astype(np.int64)
        self.k, self.mix, self.temperature = k, mix, temperature
        self.sharpness = sharpness  # probabilities are raised to this power and renormalised (calibration)
        counts = np.bincount(self.memory_labels, minlength=len(self.classes)).astype(np.float32)
        self._inverse_share = np.where(counts > 0, counts.sum() / np.maximum(counts, 1), 0.0)

    def proba(self, x: np.ndarray) -> np.ndarray:
        # one BLAS thread: for products this small, OpenBLAS's helper threads only spin
        # afterwards and slow the next encoder run (measured: 10 ms per route instead of 6)
        with _blas().limit(limits=1, user_api="blas"):
            return self._proba(x)

    def _proba(self, x: np.ndarray) -> np.ndarray:
        z = x @ self.weights.T + self.bias
        z = z - z.max(axis=-1, keepdims=True)
        e = np.exp(z)
        linear = e / e.sum(axis=-1, keepdims=True)
        mixed = linear if not len(self.memory) or self.mix == 0 else (1 - self.mix) * linear + self.mix * self._vote(x)
        if self.sharpness == 1.0:
            return mixed
        sharp = mixed**self.sharpness
        return sharp / sharp.sum(axis=-1, keepdims=True)

    def _vote(self, x: np.ndarray) -> np.ndarray:
        sims = x @ self.memory.T
        k = min(self.k, sims.shape[1])
        near = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        votes = np.zeros((len(x), len(self.classes)), np.float32)
        for row, idx in enumerate(near):
            w = np.exp((sims[row, idx] - sims[row, idx].max()) / self.temperature)
            np.add.at(votes[row], self.memory_labels[idx], w)
        votes *= self._inverse_share
        return votes / votes.sum(axis=1, keepdims=True)

    @classmethod
    def fit(
        cls,
        vectors: np.ndarray,
        labels: Sequence[str],
        trained_ids: Iterable[str] = (),
        *,
        classes: Sequence[str] = (),
        c: float = 3.0,
    ) -> RouterModel:
        """Class-balanced logistic regression (scikit-learn, fit time only) plus the example memory.
        `classes` fixes the order (and includes classes without rows, which then score 0)."""
        from sklearn.linear_model import LogisticRegression

        order = list(classes) or sorted(set(labels))
        index = np.array([order.index(y) for y in labels])
        weights = np.zeros((len(order), vectors.shape[1]), np.float32)
        bias = np.full(len(order), -1e4, np.float32)  # a class without rows is never chosen
        present = sorted(set(index.tolist()))
        if len(present) == 1:
            bias[present[0]] = 0.0
        else:
            clf = LogisticRegression(C=c, max_iter=3000, class_weight="balanced").fit(vectors, index)
            weights[clf.classes_] = clf.coef_
            bias[clf.classes_] = clf.intercept_
        return cls(order, weights, bias, trained_ids, vectors.astype(np.float16), index)

    def save(self, path: Path) -> None:
        np.savez_compressed(
            path,
            classes=np.array(self.classes),
            weights=self.weights,
            bias=self.bias,
            trained_ids=np.array(sorted(self.trained_ids)),
            memory=self.memory.astype(np.float16),
            memory_labels=self.memory_labels.astype(np.int16),
            knobs=np.array([self.k, self.mix, self.temperature, self.sharpness], np.float64),
            pool_hash=np.array(self.pool_hash),
        )

    @classmethod
    def load(cls, path: Path) -> RouterModel:
        try:
            with np.load(path, allow_pickle=False) as z:
                k, mix, temperature, sharpness = [*z["knobs"].tolist(), 1.0][:4] if "knobs" in z else (20, 0, 0.1, 1)
                return cls(
                    [str(c) for c in z["classes"]],
                    z["weights"],
                    z["bias"],
                    [str(i) for i in z["trained_ids"]],
                    z.get("memory"),
                    z.get("memory_labels"),
                    k=int(k),
                    mix=float(mix),
                    temperature=float(temperature),
                    sharpness=float(sharpness),
                    pool_hash=str(z["pool_hash"]) if "pool_hash" in z else "",
                )
        except (OSError, KeyError, ValueError) as exc:
            raise ConfigError(f"router model {path} is unreadable: {exc}") from None


class KeywordRouter:
    """Baseline: counts each expert's keyword hits; no hit -> the general expert."""

    def __init__(self, experts: Sequence[ExpertSpec]) -> None:
        self.experts = list(experts)

    def scores(self, query: str) -> dict[str, float]:
        words = _WORD.findall(query.lower())
        vocab = set(words)
        text = f" {' '.join(words)} "
        return {
            e.name: float(sum(1 for k in e.keywords if (f" {k} " in text if " " in k else k in vocab)))
            for e in self.experts
        }

    def probabilities(self, query: str, general: str) -> dict[str, float]:
        """Hits as shares of all hits; no hit at all -> everything to the general expert."""
        hits = self.scores(query)
        total = sum(hits.values())
        return {n: (h / total if total else float(n == general)) for n, h in hits.items()}


def decide(
    scores: dict[str, float],
    *,
    general: str,
    min_confidence: float,
    loaded: Sequence[str] = (),
    stay_margin: float = 0.0,
    stay_per_second: float = 0.0,
    load_seconds: Callable[[str], float] | None = None,
) -> tuple[str, str, bool]:
    """Turn expert scores into (expert, reason, stayed). Pure: the benchmark replays it.

    Stay on a loaded expert when the chosen one beats it by at most
    stay_margin + stay_per_second * (seconds loading the chosen one is expected to take)."""
    best = max(scores, key=lambda n: (scores[n], n == general))
    chosen, reason = best, f"best score {scores[best]:.2f}"
    if scores[best] < min_confidence and best != general:
        chosen, reason = general, f"confidence {scores[best]:.2f} < {min_confidence:.3g}: general expert"
    resident = [n for n in loaded if n in scores]
    if resident and chosen not in resident:
        stay = max(resident, key=lambda n: scores[n])
        seconds = load_seconds(chosen) if load_seconds and stay_per_second else 0.0
        margin = stay_margin + stay_per_second * seconds
        if scores[chosen] - scores[stay] <= margin:
            saves = f"saves a ~{seconds:.1f} s load" if seconds else "saves a model load"
            reason = (
                f"stayed on loaded {stay!r} ({scores[stay]:.2f}) instead of {chosen!r} ({scores[chosen]:.2f}): "
                f"within stay margin {margin:.2f}, {saves}"
            )
            return stay, reason, True
    return chosen, reason, False


class Router:
    """Routes a query to one expert (or the top k); see the module docstring."""

    def __init__(self, config: PoolConfig, model: RouterModel | None = None, *, keyword_only: bool = False) -> None:
        self.config = config
        self.settings = config.router
        self.general_expert = config.general_expert
        self.experts = {e.name: e for e in config.experts}
        self.keyword = KeywordRouter(config.experts)
        self.method = "keyword" if keyword_only else "minilm-int8-knn-linear"
        features = 0
        if not keyword_only:
            try:
                from ech0_moe.embeddings import get_embedder

                features = get_embedder("router").dim
            except (Ech0Error, ImportError, OSError) as exc:  # no embedder: route by keywords, and say so
                print(f"ech0-moe: warning: embedding router unavailable ({exc}); routing by keywords", file=sys.stderr)
                self.method = "keyword"
        if model is None and self.method != "keyword":
            from ech0_moe.router_fit import load_or_fit

            model = load_or_fit(config)
            if model.weights.shape[1] != features:
                raise ConfigError(
                    f"router model was fitted on {model.weights.shape[1]} features, the router makes {features}: "
                    "refit it (`ech0-moe router fit --out FILE`) or remove router.model"
                )
        names = config.names
        self.model = model or RouterModel(names, np.zeros((len(names), 1)), np.zeros(len(names)))

    def expert_scores(self, query: str) -> dict[str, float]:
        """A probability for every expert of the pool (the model's classes are the experts)."""
        if self.method == "keyword":
            return self.keyword.probabilities(query, self.general_expert)
        from ech0_moe.embeddings import route_features

        x = route_features([query])[0]
        return dict(zip(self.model.classes, self.model.proba(x[None, :])[0].tolist(), strict=True))

    def route(
        self,
        query: str,
        top_k: int = 1,
        loaded: Sequence[str] = (),
        stay_margin: float | None = None,
        load_seconds: Callable[[str], float] | None = None,
    ) -> RouteDecision:
        """Choose the expert for `query`; `loaded` are the resident experts (for staying) and
        `load_seconds(name)` the expected seconds to load one (for `stay_per_second`)."""
        t0 = time.perf_counter()
        scores = self.expert_scores(query)
        chosen, reason, stayed = decide(
            scores,
            general=self.general_expert,
            min_confidence=self.config.confidence_floor,
            loaded=loaded,
            stay_margin=self.settings.stay_margin if stay_margin is None else stay_margin,
            stay_per_second=self.settings.stay_per_second,
            load_seconds=load_seconds,
        )
        ranked = sorted(scores, key=lambda n: -scores[n])
        best = ranked[0]
        ranked = [chosen, *[n for n in ranked if n != chosen]]
        return RouteDecision(
            expert=chosen,
            domain=self.experts[chosen].domain,
            scores={n: round(scores[n], 4) for n in ranked},
            confidence=round(scores[best], 4),
            seconds=round(time.perf_counter() - t0, 6),
            method=self.method,
            ranked=ranked[: max(1, top_k)],
            reason=reason,
            best=best,
            stayed=stayed,
        )
