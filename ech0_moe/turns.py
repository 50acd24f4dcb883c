"""Turn-taking for the ensemble's parallel branches: they are served one after another
in the order the pool chose (`ExpertPool.serving_order`), stopping early once a majority
agrees. A run's turns are created by its first branch and dropped after its last."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field


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
    """One ensemble run: its turn order, the vote keys of the answers given so far (answers
    that mean the same share a key: `vote.Agreement.key`) and those answers' texts."""

    size: int
    turns: Turns = field(default_factory=Turns)
    answers: list[str] = field(default_factory=list)
    given: list[tuple[str, str]] = field(default_factory=list)  # (vote key, answer text)

    def record(self, key: str, text: str) -> None:
        self.answers.append(key)
        if key:
            self.given.append((key, text))

    def majority_reached(self) -> bool:
        """True once one answer holds more than half of all k votes: the rest cannot change it."""
        counts = Counter(a for a in self.answers if a)
        return bool(counts) and counts.most_common(1)[0][1] * 2 > self.size


class TurnRegistry:
    """One `EnsembleRun` per ensemble: made by whichever branch arrives first, dropped after its last turn."""

    def __init__(self) -> None:
        self._runs: dict[str, EnsembleRun] = {}
        self._lock = threading.Lock()

    @contextmanager
    def turn(self, run_id: str, order: int, size: int) -> Iterator[EnsembleRun]:
        """Wait for turn `order` (of `size`) of the run, then hold it for the block."""
        with self._lock:
            run = self._runs.setdefault(run_id, EnsembleRun(size))
        try:
            with run.turns.turn(order):
                yield run
        finally:
            if order == run.size - 1:
                with self._lock:
                    self._runs.pop(run_id, None)
