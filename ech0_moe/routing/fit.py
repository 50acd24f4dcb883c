"""Fitting the router to the user's pool: the experts are the classes, the training rows are
`rows.py`'s (the pool's texts, our written examples, labelled data, what the user taught).

`load_or_fit` gives the router model for a pool: the one `router: {model: ...}` names,
else the packaged model when it was fitted for exactly this pool, else one fitted
for this pool's content hash and cached outside the source tree (fitted on first use;
one line on stderr says so and how long it took). Routing features of every text
are cached too, so a refit of the shipped pool plus the 1,387-question dev set takes
seconds.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import sys
import threading
import time
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ech0_moe.config import PoolConfig
from ech0_moe.errors import ConfigError
from ech0_moe.paths import cache_dir
from ech0_moe.routing.model import PACKAGED_MODEL, RouterModel, centered, hubness, question_id
from ech0_moe.routing.rows import config_data, pool_rows, written_examples

# part of every pool hash: bump to refit all
FIT_VERSION = (
    "experts-as-classes/minilm-int8-mean+max/8-centered-question-topics-shared-split-csls-written-whole-general-prior"
)


# a typical question: our written examples of the shipped pool's domains only, since adding the
# domains written later lowered few-shot macro on every pool (docs/routing.md, "Fitting choices")
CENTER_DOMAINS = (
    "mathematics",
    "physics",
    "chemistry",
    "biology",
    "computer_science",
    "engineering",
    "reasoning",
    "general",
)


def typical_questions(cache: FeatureCache, questions: np.ndarray | None = None) -> np.ndarray:
    """Features of typical questions: our written examples of `CENTER_DOMAINS` and the user's
    labelled `questions` (features). Their mean is the centre the features are compared from; the
    labelled questions in it raised macro with data on every pool (docs/routing.md)."""
    ours = written_examples()
    rows = cache.features([t for domain in CENTER_DOMAINS for t in ours[domain]])
    return np.vstack([rows, *([] if questions is None else [questions])])


def pool_fingerprint(
    config: PoolConfig, data: Sequence[tuple[str, str]] = (), taught: Sequence[tuple[str, str]] = ()
) -> str:
    """Content hash of everything a fit depends on: the pool's routing texts, our written
    examples, the labelled data, what the user taught and the fitting recipe."""
    payload = {
        "version": FIT_VERSION,
        "experts": [[e.name, e.domain, e.description, list(e.examples)] for e in config.experts],
        "written": written_examples(),
        "data": [list(row) for row in data],
        **({"taught": [list(row) for row in taught]} if taught else {}),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:24]


class FeatureCache:
    """Routing features by text hash, kept in one .npz in the model cache (float16)."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path or cache_dir() / "router-features.npz"
        self._lock = threading.Lock()
        self._known: dict[str, np.ndarray] | None = None  # the file, read once per cache

    def features(self, texts: Sequence[str]) -> np.ndarray:
        from ech0_moe.embeddings import route_features

        keys = [hashlib.sha1(t.encode()).hexdigest()[:20] for t in texts]
        with self._lock:
            if self._known is None:
                self._known = self._read()
            known = self._known
            missing = sorted({k: t for k, t in zip(keys, texts, strict=True) if k not in known}.items())
            if missing:
                vectors = route_features([t for _, t in missing])
                known.update({k: v for (k, _), v in zip(missing, vectors.astype(np.float16), strict=True)})
                self._write(known)
        return np.vstack([known[k].astype(np.float32) for k in keys]) if keys else np.zeros((0, 768), np.float32)

    def _read(self) -> dict[str, np.ndarray]:
        try:
            with np.load(self.path, allow_pickle=False) as z:
                return dict(zip(z["keys"].tolist(), z["vectors"], strict=True))
        except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile):  # none yet, or damaged: made anew
            return {}

    def _write(self, known: dict[str, np.ndarray]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(f".{os.getpid()}.tmp.npz")
        np.savez(tmp, keys=np.array(list(known)), vectors=np.vstack(list(known.values())))
        tmp.replace(self.path)


def fit_model(
    config: PoolConfig,
    data: Sequence[tuple[str, str]] = (),
    *,
    features: FeatureCache | None = None,
    data_vectors: np.ndarray | None = None,
    written: bool = True,
    taught: Sequence[tuple[str, str]] = (),
) -> RouterModel:
    """Fit a router whose classes are `config`'s experts, on the pool's own rows (with our written
    examples unless not `written`, and the (text, expert) rows the user `taught`) plus `data`
    (question, expert) pairs (`data_vectors`: their features, if the caller has them)."""
    cache = features or FeatureCache()
    extra = np.zeros((0, 768), np.float32)
    if data:
        extra = data_vectors if data_vectors is not None else cache.features([q for q, _ in data])
    typical = typical_questions(cache, extra)
    center = typical.mean(axis=0)
    own = pool_rows(config, written) + list(taught)
    vectors = centered(cache.features([t for t, _ in own]), center)
    keep = shared_to_nearest(config, own, vectors)
    own, vectors = [own[i] for i in keep], vectors[keep]
    if not data:  # few-shot: the pool's own texts are all there is (chosen in `bench routing`, docs/routing.md)
        keep = yielded_to_specialists(config, own, vectors)
        own, vectors = [own[i] for i in keep], vectors[keep]
        model = RouterModel.fit(vectors, [e for _, e in own], classes=config.names, **FEW_SHOT)
        model.sharpness = FEW_SHOT_SHARPNESS
        model.hubness, model.hub_weight = hubness(model.memory, centered(typical, center)), HUB_WEIGHT
        model.prior[config.names.index(config.general_expert)] = GENERAL_PRIOR
    else:  # with labelled data, the data decides: recipe, calibration and floor, on held-out folds
        vectors = np.vstack([vectors, centered(extra, center)])
        labels = [e for _, e in own] + [e for _, e in data]
        model = fit_with_data(vectors, labels, [question_id(q) for q, _ in data], config, len(own))
    model.pool_hash = pool_fingerprint(config)  # the pool it serves (labelled data or not)
    model.center = center  # the rows were centered on it; the questions to route will be too
    return model


# few-shot: a stronger linear fit (few rows, little to overfit) mixed half and half with the
# class-by-class top-5 mean similarity; no abstention floor (it lowered macro accuracy in every
# few-shot setting of `bench routing`)
FEW_SHOT: dict[str, Any] = {"c": 10.0, "vote": "topmean", "k": 5, "mix": 0.5, "temperature": 0.05}
# few-shot scores are under-confident; squared, their calibration error falls on every pool (docs/routing.md)
FEW_SHOT_SHARPNESS = 2.0
# few-shot, each example's similarity to a question is lowered by this times its mean similarity to
# its 10 nearest typical questions (`hubness`), so an example near every question wins less; chosen
# on the tune half (docs/routing.md)
HUB_WEIGHT = 0.25
# few-shot, the general expert's probability counts this many times: it is the catch-all for every
# topic no specialist names, which a handful of its own examples cannot show; the smallest weight
# at which it keeps at least logistic regression's share on the tune half of every pool, at the
# same macro accuracy (docs/routing.md)
GENERAL_PRIOR = 1.5


# the general expert is the fallback, not a competitor: a row of its own (description, example,
# written example) that a model of the specialists alone gives to one specialist with at least
# this probability is that specialist's topic, and is left out of the general expert's rows
# (0.6, as the centred features make the specialists' model surer: docs/routing.md)
CLAIMED = 0.6


def shared_to_nearest(config: PoolConfig, rows: Sequence[tuple[str, str]], vectors: np.ndarray) -> list[int]:
    """Indices of `rows` to fit on: a text given to several experts (a written example or a taught
    chunk of a domain that has two experts, such as school and university mathematics) stays only
    with the one a model of the experts' own rows (descriptions, topics, examples) scores highest,
    so two experts of one domain are not trained on the same texts (docs/routing.md)."""
    first = len(pool_rows(config, written=False))  # the experts' own rows come first
    holders: dict[str, list[int]] = {}
    for i in range(first, len(rows)):
        holders.setdefault(rows[i][0], []).append(i)
    shared = [idx for idx in holders.values() if len(idx) > 1]
    if not shared:
        return list(range(len(rows)))
    names = config.names
    judge = RouterModel.fit(vectors[:first], [e for _, e in rows[:first]], classes=names, **FEW_SHOT)
    scores = judge.proba(vectors[[idx[0] for idx in shared]])
    dropped = set()
    for idx, row in zip(shared, scores, strict=True):
        best = max(idx, key=lambda i: row[names.index(rows[i][1])])
        dropped.update(i for i in idx if i != best)
    return [i for i in range(len(rows)) if i not in dropped]


def yielded_to_specialists(config: PoolConfig, rows: Sequence[tuple[str, str]], vectors: np.ndarray) -> list[int]:
    """Indices of `rows` to fit on: all of them but the general expert's rows a specialist claims."""
    general = config.general_expert
    mine = [i for i, (_, e) in enumerate(rows) if e == general]
    others = [i for i, (_, e) in enumerate(rows) if e != general]
    specialists = [n for n in config.names if n != general]
    if not mine or len({rows[i][1] for i in others}) < 2:
        return list(range(len(rows)))
    judge = RouterModel.fit(vectors[others], [rows[i][1] for i in others], classes=specialists)
    claimed = judge.proba(vectors[mine]).max(axis=1) >= CLAIMED
    dropped = {i for i, c in zip(mine, claimed, strict=True) if c}
    return [i for i in range(len(rows)) if i not in dropped]


# what `fit_with_data` chooses between on held-out folds of the user's data: the data recipe
# (C = 3, a 20-neighbour vote), a stronger linear fit, and the few-shot recipe
DATA_RECIPES: list[dict[str, Any]] = [{}, {"c": 10.0}, FEW_SHOT]
SHARPNESS_GRID = (0.8, 1.0, 1.2, 1.4, 1.6, 1.8, 2.0, 2.4)
FLOOR_GRID = (0.0, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5)


def fit_with_data(
    vectors: np.ndarray, labels: Sequence[str], ids: Sequence[str], config: PoolConfig, first_data: int, folds: int = 3
) -> RouterModel:
    """The router fitted on the pool's rows plus labelled data (rows from `first_data` on), its
    recipe and calibration chosen on out-of-fold predictions of the training rows: the recipe
    (the data recipe's 20-neighbour vote, or the few-shot one, which wins with a few dozen
    labelled questions) and the abstention floor with the best macro accuracy on the labelled
    rows (0 when abstaining does not help), and the power that calibrates the scores (lowest log
    loss; the raw mix is under-confident: 0.65 confidence for 0.78 accuracy on the dev set)."""
    from ech0_moe.datasets import fold_of

    classes = config.names
    if len(set(labels)) < 2 or len(labels) < 4 * folds:
        return RouterModel.fit(vectors, labels, ids, classes=classes)
    fold = np.array(fold_of(list(labels), folds))
    truth = np.array([classes.index(y) for y in labels])
    g = classes.index(config.general_expert)

    def calibrated(knobs: dict[str, Any]) -> tuple[float, float, float]:
        """(macro accuracy on the labelled rows, power, floor) of a recipe, out of fold."""
        probs = np.zeros((len(labels), len(classes)))
        for f in range(folds):
            train, held = fold != f, fold == f
            fitted = [y for y, t in zip(labels, train, strict=True) if t]
            probs[held] = RouterModel.fit(vectors[train], fitted, classes=classes, **knobs).proba(vectors[held])

        def sharpen(power: float) -> np.ndarray:
            sharp = probs**power
            return sharp / sharp.sum(axis=1, keepdims=True)

        def log_loss(power: float) -> float:
            return float(-np.log(sharpen(power)[np.arange(len(truth)), truth] + 1e-9).mean())

        power = min(SHARPNESS_GRID, key=log_loss)
        sharp = sharpen(power)[first_data:]
        top, want = sharp.argmax(axis=1), truth[first_data:]

        def macro(floor: float) -> float:
            chosen = np.where(sharp.max(axis=1) < floor, g, top)
            return round(float(np.mean([np.mean(chosen[want == c] == c) for c in np.unique(want)])), 4)

        floor = max(FLOOR_GRID, key=lambda f: (macro(f), -f))
        return macro(floor), power, floor

    scored = [calibrated(knobs) for knobs in DATA_RECIPES]
    best = max(range(len(DATA_RECIPES)), key=lambda i: (scored[i][0], -i))
    model = RouterModel.fit(vectors, labels, ids, classes=classes, **DATA_RECIPES[best])
    _, model.sharpness, model.floor = scored[best]
    return model


def load_or_fit(config: PoolConfig, taught: Sequence[tuple[str, str]] = ()) -> RouterModel:
    """The router model for this pool and what the user `taught` (see the module docstring)."""
    if len(config.experts) == 1:  # nothing to choose between: nothing to fit
        return RouterModel(config.names, np.zeros((1, 768)), np.zeros(1))
    if config.router.model:
        model = RouterModel.load(Path(config.router.model))
        if model.classes != config.names:
            raise ConfigError(
                f"router model {config.router.model} was fitted for experts {', '.join(model.classes)}, "
                f"not this pool's {', '.join(config.names)}: remove router.model (the router then fits itself)"
            )
        return model
    data = config_data(config)
    fingerprint = pool_fingerprint(config, data, taught)
    if not data and not taught and PACKAGED_MODEL.is_file():
        packaged = RouterModel.load(PACKAGED_MODEL)
        if packaged.pool_hash == fingerprint:  # fitted for the shipped pool (plus the dev set)
            return packaged
    cached = cache_dir() / "routers" / f"{fingerprint}.npz"
    if (model := _cached(cached)) is not None:
        return model
    cached.parent.mkdir(parents=True, exist_ok=True)
    with open(cached.with_suffix(".lock"), "a") as lock:  # one process fits; the others wait, then read its file
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (model := _cached(cached)) is not None:
            return model
        t0 = time.perf_counter()
        model = fit_model(config, data, taught=taught)
        tmp = cached.with_suffix(f".{os.getpid()}.tmp.npz")
        model.save(tmp)
        tmp.replace(cached)
    print(
        f"ech0-moe: router fitted for this pool ({len(config.experts)} experts, {len(model.memory_labels)} "
        f"examples) in {time.perf_counter() - t0:.1f} s; cached as {cached}",
        file=sys.stderr,
    )
    return model


def _cached(path: Path) -> RouterModel | None:
    """The model cached at `path`; None when there is none, or when it is damaged (it is derived
    data: removed with a warning, and fitted again)."""
    if not path.is_file():
        return None
    try:
        return RouterModel.load(path)
    except ConfigError as exc:
        print(f"ech0-moe: warning: {exc}; fitting it again", file=sys.stderr)
        with contextlib.suppress(OSError):
            path.unlink()
        return None
