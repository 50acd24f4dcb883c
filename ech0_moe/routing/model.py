"""The router's model: domain probabilities for routing features, a linear view mixed with
a vote of the nearest fitted examples. Fitting it to a pool is `fit.py`; using it, `router.py`."""

from __future__ import annotations

import functools
import hashlib
import zipfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from threadpoolctl import ThreadpoolController

from ech0_moe.errors import ConfigError

PACKAGED_MODEL = Path(__file__).resolve().parent.parent / "data" / "router-model.npz"


def question_id(text: str) -> str:
    """Stable id of a question (whitespace- and case-insensitive)."""
    return hashlib.sha1(" ".join(text.lower().split()).encode()).hexdigest()[:16]


def top_mean(sims: np.ndarray, labels: np.ndarray, classes: int, k: int) -> np.ndarray:
    """Each class's mean similarity to its `k` closest examples (semantic-router's rule); a
    class without examples scores -inf. `sims`: (queries, examples); `labels`: class per example."""
    scores = np.full((len(sims), classes), -np.inf, np.float32)
    for c in np.unique(labels):
        own = sims[:, labels == c]
        n = min(k, own.shape[1])
        scores[:, c] = -np.partition(-own, n - 1, axis=1)[:, :n].mean(axis=1)
    return scores


def hubness(memory: np.ndarray, typical: np.ndarray, k: int = 10) -> np.ndarray:
    """Each row of `memory`: its mean similarity to its `k` nearest rows of `typical` (how close it
    lies to questions in general: the correction of cross-domain similarity local scaling, CSLS)."""
    if not len(memory) or not len(typical):
        return np.zeros(len(memory), np.float32)
    return top_mean(memory @ typical.T, np.zeros(len(typical), np.int64), 1, k)[:, 0]  # one class: all of them


def centered(x: np.ndarray, center: np.ndarray | None) -> np.ndarray:
    """Unit-length `x - center` (`x` itself without a center): what the model compares."""
    if center is None:
        return x
    out = x - center
    return out / np.maximum(np.linalg.norm(out, axis=-1, keepdims=True), 1e-12)


@functools.cache
def _blas() -> ThreadpoolController:
    return ThreadpoolController()


class RouterModel:
    """Domain probabilities for unit-length routing features x (`route_features`).

    Features are compared after subtracting `center`, the mean features of typical questions
    (our written examples of every domain): what all questions share (their being questions)
    then counts for nothing, and what sets a topic apart counts for more.

    Two views of the same fitted examples, mixed:
    - linear: softmax(W x + b), class-balanced logistic regression;
    - memory, `vote="knn"` (with labelled data): the k nearest fitted examples vote with weight
      exp(sim / temperature), each vote divided by its class's share of the examples (so the
      1,000 `general` questions do not outvote the 14 `engineering` ones);
      `vote="topmean"` (few-shot): each class scores the mean similarity of its k closest
      examples (semantic-router's rule), softmax(score / temperature) - with a handful of
      examples per class, a vote of 20 neighbours reaches into every class.
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
        vote: str = "knn",
        floor: float = 0.0,
        pool_hash: str = "",
        center: np.ndarray | None = None,
        hubness: np.ndarray | None = None,
        hub_weight: float = 0.0,
        prior: np.ndarray | None = None,
    ):
        self.pool_hash = pool_hash  # `routing.fit.pool_fingerprint` of the pool it was fitted for
        self.classes = list(classes)
        self.weights = weights.astype(np.float32)
        self.bias = bias.astype(np.float32)
        self.trained_ids = frozenset(trained_ids)
        self.memory = np.zeros((0, self.weights.shape[1]), np.float32) if memory is None else memory.astype(np.float32)
        self.memory_labels = np.zeros(0, np.int64) if memory_labels is None else memory_labels.astype(np.int64)
        self.k, self.mix, self.temperature = k, mix, temperature
        self.sharpness = sharpness  # probabilities are raised to this power and renormalised (calibration)
        self.vote = vote
        self.floor = floor  # below this top score the general expert answers (chosen on data; 0: never)
        self.center = None if center is None or not np.any(center) else np.asarray(center, np.float32)
        # per fitted example: its mean similarity to its nearest typical questions (`hubness`);
        # the top-mean vote subtracts `hub_weight` times it, so an example close to every
        # question (a hub) does not win questions for its expert by being close to all of them
        self.hubness = np.zeros(len(self.memory), np.float32) if hubness is None else hubness.astype(np.float32)
        if self.hubness.shape != (len(self.memory),):
            raise ValueError(f"{len(self.hubness)} hubness values for {len(self.memory)} examples")
        self.hub_weight = hub_weight
        # per class, a weight its probability is multiplied by before renormalising (1: none)
        no_prior = prior is None or not len(prior)
        self.prior = np.ones(len(self.classes), np.float32) if no_prior else np.asarray(prior, np.float32)
        counts = np.bincount(self.memory_labels, minlength=len(self.classes)).astype(np.float32)
        self._inverse_share = np.where(counts > 0, counts.sum() / np.maximum(counts, 1), 0.0)

    def proba(self, x: np.ndarray) -> np.ndarray:
        # one BLAS thread: for products this small, OpenBLAS's helper threads only spin
        # afterwards and slow the next encoder run
        with _blas().limit(limits=1, user_api="blas"):
            return self._proba(x)

    def _proba(self, x: np.ndarray) -> np.ndarray:
        x = centered(x, self.center)
        z = x @ self.weights.T + self.bias
        z = z - z.max(axis=-1, keepdims=True)
        e = np.exp(z)
        linear = e / e.sum(axis=-1, keepdims=True)
        mixed = linear if not len(self.memory) or self.mix == 0 else (1 - self.mix) * linear + self.mix * self._vote(x)
        if self.sharpness == 1.0 and not np.any(self.prior != 1.0):
            return mixed
        sharp = mixed**self.sharpness * self.prior
        return sharp / sharp.sum(axis=-1, keepdims=True)

    def _vote(self, x: np.ndarray) -> np.ndarray:
        sims = x @ self.memory.T
        if self.vote == "topmean":
            sims = sims - self.hub_weight * self.hubness
            scores = top_mean(sims, self.memory_labels, len(self.classes), self.k)
            e = np.exp((scores - scores.max(axis=1, keepdims=True)) / self.temperature)
            return e / e.sum(axis=1, keepdims=True)
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
        **knobs: Any,
    ) -> RouterModel:
        """Class-balanced logistic regression (scikit-learn, fit time only) plus the example memory,
        on `vectors` as they are (centered already, if the model is to be: its `center` is set
        after). `classes` fixes the order (and includes classes without rows, which then score
        0); `knobs`: k, mix, temperature, vote (see the class docstring)."""
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
        return cls(order, weights, bias, trained_ids, vectors.astype(np.float16), index, **knobs)

    def save(self, path: Path) -> None:
        np.savez_compressed(
            path,
            classes=np.array(self.classes),
            weights=self.weights,
            bias=self.bias,
            trained_ids=np.array(sorted(self.trained_ids)),
            memory=self.memory.astype(np.float16),
            memory_labels=self.memory_labels.astype(np.int16),
            knobs=np.array(
                [
                    self.k,
                    self.mix,
                    self.temperature,
                    self.sharpness,
                    self.vote == "topmean",
                    self.floor,
                    self.hub_weight,
                ],
                np.float64,
            ),
            hubness=self.hubness.astype(np.float16),
            prior=self.prior,
            pool_hash=np.array(self.pool_hash),
            center=np.zeros(0, np.float32) if self.center is None else self.center,
        )

    @classmethod
    def load(cls, path: Path) -> RouterModel:
        try:
            with np.load(path, allow_pickle=False) as z:
                knobs = z["knobs"].tolist() if "knobs" in z else [20, 0, 0.1]  # older files: fewer knobs
                defaults = [20, 0, 0.1, 1.0, 0.0, 0.0, 0.0]  # k, mix, temperature, sharpness, topmean, floor, hubs
                k, mix, temperature, sharpness, topmean, floor, hub_weight = knobs + defaults[len(knobs) :]
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
                    vote="topmean" if topmean else "knn",
                    floor=float(floor),
                    pool_hash=str(z["pool_hash"]) if "pool_hash" in z else "",
                    center=z["center"] if "center" in z and len(z["center"]) else None,
                    hubness=z.get("hubness"),
                    hub_weight=float(hub_weight),
                    prior=z.get("prior"),
                )
        except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile) as exc:  # truncated, random bytes
            raise ConfigError(f"router model {path} is unreadable: {exc}") from None
