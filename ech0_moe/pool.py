"""The expert pool and swap manager.

Invariant: the bytes of all resident models plus the bytes reserved for models
being loaded never exceed the memory budget. A model in use (answering) is
never evicted; a request that cannot fit waits until the user is done.
Experts sharing one weights file share one resident model (no swap).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any

from ech0_moe.backends import Backend, LoadedModel, make_backend
from ech0_moe.backends.base import Message
from ech0_moe.config import ExpertSpec, PoolConfig
from ech0_moe.errors import BudgetError


@dataclass(frozen=True)
class Acquired:
    """What getting an expert cost: whether a model was loaded (a swap) and how long it took."""

    expert: str
    swapped: bool
    load_seconds: float
    evicted: tuple[str, ...] = ()


@dataclass(frozen=True)
class SwapEvent:
    at: float
    expert: str
    model_key: str
    load_seconds: float
    evicted: tuple[str, ...]
    loaded_bytes_after: int


class ExpertPool:
    """Thread-safe pool: loads the expert asked for, evicting idle ones so the budget holds."""

    def __init__(self, config: PoolConfig, backends: dict[str, Backend] | None = None) -> None:
        self.config = config
        self.budget = config.memory_budget
        self.specs: dict[str, ExpertSpec] = {e.name: e for e in config.experts}
        self._backends: dict[str, Backend] = dict(backends or {})
        self._loaded: dict[str, LoadedModel] = {}
        self._reserved: dict[str, int] = {}
        self._cond = threading.Condition()
        self.events: list[SwapEvent] = []
        self.peak_loaded_bytes = 0

    # ---- introspection -------------------------------------------------
    def backend(self, name: str) -> Backend:
        with self._cond:
            if name not in self._backends:
                self._backends[name] = make_backend(name)
            return self._backends[name]

    @property
    def loaded_bytes(self) -> int:
        with self._cond:
            return sum(m.size_bytes for m in self._loaded.values())

    def loaded_experts(self) -> list[str]:
        """Names of experts whose model is resident (several if they share a file)."""
        with self._cond:
            return [n for n, s in self.specs.items() if s.model_key in self._loaded]

    def is_loaded(self, name: str) -> bool:
        with self._cond:
            return self.specs[name].model_key in self._loaded

    @property
    def swaps(self) -> int:
        return len(self.events)

    def stats(self) -> dict[str, Any]:
        with self._cond:
            return {
                "budget_bytes": self.budget,
                "loaded_bytes": sum(m.size_bytes for m in self._loaded.values()),
                "peak_loaded_bytes": self.peak_loaded_bytes,
                "loaded_experts": [n for n, s in self.specs.items() if s.model_key in self._loaded],
                "swaps": len(self.events),
                "load_seconds_total": round(sum(e.load_seconds for e in self.events), 4),
                "events": [asdict(e) for e in self.events],
            }

    # ---- acquiring -----------------------------------------------------
    def _evict_idle_until(self, need: int) -> list[str]:
        """Unload idle models, least recently used first, until `need` bytes are free."""
        evicted: list[str] = []
        while self.budget - self._used() < need:
            idle = sorted((m for m in self._loaded.values() if m.users == 0), key=lambda m: m.last_used)
            if not idle:
                break
            victim = idle[0]
            spec = next(s for s in self.specs.values() if s.model_key == victim.key)
            self.backend(spec.backend).unload(spec, victim.handle)
            del self._loaded[victim.key]
            evicted.append(spec.name)
        return evicted

    def _used(self) -> int:
        return sum(m.size_bytes for m in self._loaded.values()) + sum(self._reserved.values())

    def _acquire(self, name: str) -> tuple[LoadedModel, Acquired]:
        spec = self.specs[name]
        key = spec.model_key
        if spec.size_bytes > self.budget:
            raise BudgetError(f"expert {name!r} needs {spec.size_bytes} bytes, more than the budget {self.budget}")
        backend = self.backend(spec.backend)
        evicted: list[str] = []
        with self._cond:
            while True:
                model = self._loaded.get(key)
                if model is not None:
                    model.users += 1
                    model.last_used = time.monotonic()
                    return model, Acquired(name, False, 0.0)
                if key not in self._reserved:
                    evicted += self._evict_idle_until(spec.size_bytes)
                    if self.budget - self._used() >= spec.size_bytes:
                        self._reserved[key] = spec.size_bytes
                        break
                self._cond.wait()
        t0 = time.perf_counter()
        try:
            handle, size = backend.load(spec)
        except BaseException:
            with self._cond:
                del self._reserved[key]
                self._cond.notify_all()
            raise
        seconds = time.perf_counter() - t0
        with self._cond:
            del self._reserved[key]
            model = LoadedModel(key, handle, size, seconds, users=1, last_used=time.monotonic())
            self._loaded[key] = model
            used = self._used()
            self.peak_loaded_bytes = max(self.peak_loaded_bytes, used)
            self.events.append(SwapEvent(time.time(), name, key, round(seconds, 4), tuple(evicted), used))
            self._cond.notify_all()
        return model, Acquired(name, True, seconds, tuple(evicted))

    def _release(self, model: LoadedModel) -> None:
        with self._cond:
            model.users -= 1
            model.last_used = time.monotonic()
            self._cond.notify_all()

    @contextmanager
    def use(self, name: str) -> Iterator[tuple[LoadedModel, Acquired]]:
        """Hold expert `name` resident for the duration of the block."""
        model, acquired = self._acquire(name)
        try:
            yield model, acquired
        finally:
            self._release(model)

    def ensure_loaded(self, name: str) -> Acquired:
        """Make `name` resident (swapping others out if needed) and return what that cost."""
        with self.use(name) as (_, acquired):
            return acquired

    def chat(self, name: str, messages: list[Message], max_tokens: int | None = None) -> tuple[str, Acquired]:
        """Answer with expert `name`, loading it first if another expert is resident."""
        spec = self.specs[name]
        with self.use(name) as (model, acquired), model.lock:
            text = self.backend(spec.backend).chat(spec, model.handle, messages, max_tokens or spec.max_tokens)
        return text, acquired

    def unload_all(self) -> None:
        with self._cond:
            self._evict_idle_until(self.budget)
            self._cond.notify_all()
