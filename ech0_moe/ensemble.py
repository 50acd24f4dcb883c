"""Ensemble helpers: serve experts one after another (stopping early once a majority
agrees), then combine by weighted vote."""

from __future__ import annotations

import re
import threading
from collections import Counter, defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any


class Turns:
    """Lets parallel branches run strictly in order 0, 1, 2, ... (a failed turn still passes it on)."""

    def __init__(self) -> None:
        self._next = 0
        self._cond = threading.Condition()

    @contextmanager
    def turn(self, order: int) -> Iterator[None]:
        with self._cond:
            self._cond.wait_for(lambda: self._next == order)
        try:
            yield
        finally:
            with self._cond:
                self._next = order + 1
                self._cond.notify_all()


@dataclass
class EnsembleRun:
    """One ensemble run: its turn order and the (normalised) answers given so far."""

    size: int
    turns: Turns = field(default_factory=Turns)
    answers: list[str] = field(default_factory=list)

    def majority_reached(self) -> bool:
        """True once one answer holds more than half of all k votes: the rest cannot change it."""
        counts = Counter(a for a in self.answers if a)
        return bool(counts) and counts.most_common(1)[0][1] * 2 > self.size


class TurnRegistry:
    """One `EnsembleRun` per ensemble, created by `open` and dropped after its last turn."""

    def __init__(self) -> None:
        self._runs: dict[str, EnsembleRun] = {}
        self._lock = threading.Lock()

    def open(self, run_id: str, size: int) -> None:
        with self._lock:
            self._runs[run_id] = EnsembleRun(size)

    @contextmanager
    def turn(self, run_id: str, order: int) -> Iterator[EnsembleRun]:
        """Wait for turn `order` of the run, then hold it for the block."""
        with self._lock:
            run = self._runs[run_id]
        try:
            with run.turns.turn(order):
                yield run
        finally:
            if order == run.size - 1:
                with self._lock:
                    self._runs.pop(run_id, None)


_NORM = re.compile(r"[^a-z0-9]+")


def normalise(answer: str) -> str:
    """Key used for voting: a leading choice letter ('B) ...'), else the first 12 words, lower-case."""
    text = answer.strip()
    m = re.match(r"^\(?([A-Da-d])[).:\s]", text + " ")
    if m:
        return m.group(1).upper()
    return _NORM.sub(" ", text.lower()).strip()[:80]


def combine(answers: list[dict[str, Any]]) -> dict[str, Any]:
    """Weighted vote: answers with the same normalised key pool their route scores;
    the winning group's answer from its highest-scored expert is the solution."""
    usable = [a for a in answers if a.get("solution")]
    if not usable:
        return {"solution": "", "expert_used": "", "votes": {}}
    weight: dict[str, float] = defaultdict(float)
    for a in usable:
        weight[normalise(a["solution"])] += float(a.get("route_score", 0.0)) + 1e-6
    best_key = max(weight, key=lambda k: weight[k])
    best = max((a for a in usable if normalise(a["solution"]) == best_key), key=lambda a: a.get("route_score", 0.0))
    return {
        "solution": best["solution"],
        "expert_used": best["expert"],
        "votes": {k: round(v, 4) for k, v in weight.items()},
    }
