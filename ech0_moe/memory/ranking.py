"""Ranking for hybrid search, pure (no store, no model): a convex combination of the dense and
lexical scores, then Maximal Marginal Relevance for diverse passages."""

from __future__ import annotations

from collections.abc import Collection, Mapping

import numpy as np

# a passage the lexical index finds may be this much further (cosine, as a multiple of max_distance)
# than the dense threshold: its words matched where the embedding did not (names, numbers, rare terms)
LEXICAL_REACH = 1.4
# the BM25 share of a passage's relevance (the rest is its cosine): scores, not ranks, so a
# passage that shares the question's rare words keeps its lead and one the embedding alone finds
# still counts. The share grows with how many of the question's words the best BM25 passage
# holds: a question in the passage's own words trusts BM25, a paraphrase the embedding (both
# chosen on the tuning split: docs/retrieval.md)
LEXICAL_SHARE = 0.3
LEXICAL_SHARE_GAIN = 0.4
DUPLICATE_SIMILARITY = 0.97  # a passage this close to one already chosen adds nothing


def lexical_share(asked: Collection[str], held: Collection[str]) -> float:
    """The BM25 share for a question of words `asked` whose best BM25 passage has words `held`:
    LEXICAL_SHARE, plus LEXICAL_SHARE_GAIN times the part of the asked words it holds."""
    covered = len(set(asked) & set(held)) / len(set(asked)) if asked else 0.0
    return LEXICAL_SHARE + LEXICAL_SHARE_GAIN * covered


def relevance(similarity: Mapping[str, float], bm25: Mapping[str, float], share: float) -> dict[str, float]:
    """Each candidate's relevance in [0, 1]: `share` of its BM25 score over the best one (0 when
    BM25 did not find it), the rest its cosine similarity spread over the candidates'."""
    top = max(bm25.values(), default=0.0) or 1.0
    low, high = min(similarity.values(), default=0.0), max(similarity.values(), default=1.0)
    spread = (high - low) or 1.0
    return {
        cid: share * bm25.get(cid, 0.0) / top + (1 - share) * (sim - low) / spread for cid, sim in similarity.items()
    }


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
