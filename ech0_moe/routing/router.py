"""Pick the expert for a query without loading any expert model.

The router encodes the raw query with the offline MiniLM (int8 ONNX, mean+max
pooled: `embeddings.route_features`) and scores every expert of the pool with
`RouterModel`: a class-balanced linear model mixed with a vote of the nearest
fitted examples. The experts are the classes, whatever their number and domains;
`fit.py` fits the model to a pool (its descriptions, examples and labelled data)
when the pool changes and caches it. A model records which questions it saw, so
`bench routing` never scores a question the model was fitted on.

Decisions on top of the scores:
- low confidence (top probability < the floor: `min_confidence`, else the one fitted on
  labelled data; few-shot there is none) -> the general expert;
- swap-cost awareness: if an already-loaded expert scores within
  `stay_margin` (+ `stay_per_second` x the expected load seconds) of the best,
  stay on it and skip the load;
- top-k for the ensemble.
The keyword router is the baseline the benchmark compares against.
"""

from __future__ import annotations

import re
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ech0_moe.config import ExpertSpec, PoolConfig
from ech0_moe.errors import ConfigError, Ech0Error
from ech0_moe.owners import LOCAL
from ech0_moe.routing.fit import load_or_fit
from ech0_moe.routing.model import RouterModel

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
    best: str = ""  # the top-scored expert, before fallback or staying
    stayed: bool = False  # kept a loaded expert to avoid a swap

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


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

    def __init__(
        self,
        config: PoolConfig,
        model: RouterModel | None = None,
        *,
        keyword_only: bool = False,
        taught: Sequence[tuple[str, str]] = (),
    ) -> None:
        self.config = config
        self.settings = config.router
        self.general_expert = config.general_expert
        self.experts = {e.name: e for e in config.experts}
        self.keyword = KeywordRouter(config.experts)
        self.method = "keyword" if keyword_only else "minilm-int8"  # completed with the model's vote below
        features = 0
        if not keyword_only:
            try:
                from ech0_moe.embeddings import get_embedder

                features = get_embedder("router").dim
            except ConfigError:  # a setting to fix (ECH0_THREADS=abc), not a missing encoder
                raise
            except (Ech0Error, ImportError, OSError) as exc:  # no embedder: route by keywords, and say so
                print(f"ech0-moe: warning: embedding router unavailable ({exc}); routing by keywords", file=sys.stderr)
                self.method = "keyword"
        if model is None and self.method != "keyword":
            model = load_or_fit(config, taught)
            if model.weights.shape[1] != features:
                raise ConfigError(
                    f"router model was fitted on {model.weights.shape[1]} features, the router makes {features}: "
                    "refit it (`ech0-moe router fit --out FILE`) or remove router.model"
                )
        names = config.names
        self.model = model or RouterModel(names, np.zeros((len(names), 1)), np.zeros(len(names)))
        if self.method != "keyword":  # the linear view and the memory's vote: knn (with data) or topmean (few-shot)
            self.method = f"minilm-int8-{self.model.vote}-linear"
        # abstain below `router.min_confidence` if set, else below the floor fitted on labelled data (few-shot: none)
        self.floor = self.settings.min_confidence if self.settings.min_confidence is not None else self.model.floor

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
            min_confidence=self.floor,
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


def taught_router(config: PoolConfig, kb_dir: str | Path, asker: str = LOCAL) -> Router | None:
    """A router refitted on what was taught in the knowledge-base folder `kb_dir` (documents added
    with a domain, feedback: `routing.taught`) as `asker` routes with it (`rows.taught_rows`);
    None when nothing was taught."""
    from ech0_moe.routing.rows import taught_rows
    from ech0_moe.routing.taught import read

    rows = taught_rows(config, read(kb_dir), asker)
    return Router(config, taught=rows) if rows else None
