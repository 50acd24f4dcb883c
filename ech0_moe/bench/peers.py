"""The plain peers `bench routing` puts beside the router, fitted on the same rows (texts of
the pool, written examples, labelled questions) and the same features (the router's MiniLM
mean+max), so only the method differs."""

from __future__ import annotations

import importlib.util
from typing import Any

import numpy as np

TOP_K = 5  # semantic-router's default: the utterances nearest the query, over every route
# the package where it is installed (`pip install '.[peers]'`), else its rule computed here
SEMANTIC_ROUTER = "semantic_router" if importlib.util.find_spec("semantic_router") else "semantic_router_rule"
SIMILARITIES = ("semantic_router", "semantic_router_rule")  # peers whose scores are not probabilities


def peers(rows: np.ndarray, labels: list[str], names: list[str], vectors: np.ndarray) -> dict[str, np.ndarray]:
    """Scores (questions x experts) of class-balanced logistic regression (scikit-learn's
    defaults otherwise), a 5-nearest-neighbour vote, and semantic-router (`SEMANTIC_ROUTER`)."""
    from sklearn.linear_model import LogisticRegression

    index = np.array([names.index(y) for y in labels])
    out: dict[str, np.ndarray] = {}
    clf = LogisticRegression(max_iter=3000, class_weight="balanced").fit(rows, index)
    out["logistic_regression"] = np.zeros((len(vectors), len(names)))
    out["logistic_regression"][:, clf.classes_] = clf.predict_proba(vectors)
    sims = vectors @ rows.T
    near = np.argsort(-sims, axis=1)[:, :5]
    votes = np.zeros((len(vectors), len(names)))
    for r, nn in enumerate(near):
        np.add.at(votes[r], index[nn], 1.0 + 1e-3 * sims[r, nn])  # ties: the closer neighbours
    out["nearest_neighbours_5"] = votes / votes.sum(axis=1, keepdims=True)
    if SEMANTIC_ROUTER == "semantic_router":
        out[SEMANTIC_ROUTER] = semantic_router_package(rows, index, names, vectors)
    else:
        out[SEMANTIC_ROUTER] = semantic_router_rule(sims, index, len(names))
    return out


def semantic_router_rule(sims: np.ndarray, index: np.ndarray, classes: int, k: int = TOP_K) -> np.ndarray:
    """semantic-router's rule (`IndexedRouter`, aggregation `mean`), computed here: the `k`
    utterances nearest the query over all routes; each route scores the mean similarity of
    its utterances among them, and 0 without one."""
    k = min(k, sims.shape[1])
    scores = np.zeros((len(sims), classes))
    for r, top in enumerate(np.argpartition(-sims, k - 1, axis=1)[:, :k]):
        for c in np.unique(index[top]):
            scores[r, c] = sims[r, top[index[top] == c]].mean()
    return scores


def semantic_router_package(rows: np.ndarray, index: np.ndarray, names: list[str], vectors: np.ndarray) -> np.ndarray:
    """semantic-router itself: an `IndexedRouter` (its defaults: a local index, top 5, mean)
    whose encoder hands it our features, asked through its public call for every route's score."""
    from semantic_router.encoders import DenseEncoder
    from semantic_router.route import Route
    from semantic_router.routers import IndexedRouter

    table = {f"r{i}": v for i, v in enumerate(rows)} | {f"q{i}": v for i, v in enumerate(vectors)}

    class OurFeatures(DenseEncoder):  # texts are keys of `table`: no second encoder runs
        name: str = "ech0-moe-minilm-mean-max"

        def __call__(self, docs: list[Any]) -> list[list[float]]:
            return [table[d].tolist() for d in docs]

    routes = [Route(name=n, utterances=[f"r{i}" for i in np.flatnonzero(index == c)]) for c, n in enumerate(names)]
    router = IndexedRouter(encoder=OurFeatures(), routes=[r for r in routes if r.utterances])
    scores = np.zeros((len(vectors), len(names)))
    for q in range(len(vectors)):
        for choice in router(f"q{q}", limit=None):  # every route, ranked by its raw score
            scores[q, names.index(choice.name)] = choice.confidence
    return scores
