"""Ranking for hybrid search, pure (no store, no model): reciprocal rank fusion of the dense
and lexical rankings, then Maximal Marginal Relevance for diverse passages."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

RRF_K = 60  # reciprocal rank fusion: 1 / (RRF_K + rank), summed over the rankings that hold a passage
# a passage the lexical index finds may be this much further (cosine, as a multiple of max_distance)
# than the dense threshold: its words matched where the embedding did not (names, numbers, rare terms)
LEXICAL_REACH = 1.4
# the BM25 ranking's weight in the fusion (the dense ranking's is 1): MiniLM truncates and blurs
# names and numbers that BM25 matches exactly (tuned on benchmarks/qa.jsonl: docs/retrieval.md)
LEXICAL_WEIGHT = 1.5
# MMR's relevance: this share from the fused ranks (spread over [0, 1]), the rest from the cosine
# similarity (a learned answer to the same question is much closer than any document; ranks alone
# would hide that)
RANK_SHARE = 0.75
DUPLICATE_SIMILARITY = 0.97  # a passage this close to one already chosen adds nothing


def rrf(rankings: Iterable[tuple[Sequence[str], float]], k: int = RRF_K) -> dict[str, float]:
    """Reciprocal rank fusion of (ranked ids, weight) rankings: weight / (k + rank) summed per id."""
    fusion: dict[str, float] = {}
    for ids, weight in rankings:
        for rank, cid in enumerate(ids):
            fusion[cid] = fusion.get(cid, 0.0) + weight / (k + rank + 1)
    return fusion


def relevance(fusion: dict[str, float], distance: dict[str, float], rank_share: float = RANK_SHARE) -> dict[str, float]:
    """MMR relevance: the fused scores spread over [0, 1] (raw RRF scores differ by too little for
    relevance to outweigh redundancy), mixed with the cosine similarity."""
    low, high = min(fusion.values(), default=0.0), max(fusion.values(), default=1.0)
    spread = (high - low) or 1.0
    return {cid: rank_share * (f - low) / spread + (1 - rank_share) * (1 - distance[cid]) for cid, f in fusion.items()}


def mmr(relevance: dict[str, float], vectors: dict[str, np.ndarray], k: int, diversity: float = 0.3) -> list[str]:
    """Up to `k` ids by Maximal Marginal Relevance with weight `diversity`; near-exact duplicates
    of a passage already chosen are dropped."""
    pool = list(relevance)
    chosen: list[str] = []

    def redundancy(cid: str) -> float:
        return max((float(vectors[cid] @ vectors[c]) for c in chosen), default=0.0)

    while pool and len(chosen) < k:
        best = max(pool, key=lambda c: (1 - diversity) * relevance[c] - diversity * redundancy(c))
        pool.remove(best)
        if redundancy(best) > DUPLICATE_SIMILARITY:
            continue
        chosen.append(best)
    return chosen
