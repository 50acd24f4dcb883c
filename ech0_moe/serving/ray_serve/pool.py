"""`RayPool`: the expert pool of `backend: ray` (a `Pool`, like `ExpertPool`).

It loads nothing itself: every request goes to the Serve application (`app.py`) tagged with the
expert's name (`multiplexed_model_id`), Ray routes it to the replica holding that expert, and
what the replica did (loaded or not, seconds, which replica) comes back with the answer.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import Any

from ech0_moe.choices import choose_by_letter
from ech0_moe.config import ExpertSpec, PoolConfig
from ech0_moe.errors import BackendError
from ech0_moe.serving.pool import ASSUMED_LOAD_BYTES_PER_S, serving_order
from ech0_moe.serving.ray_serve.admin import app_handle, deploy, ray_errors, residency
from ech0_moe.serving.ray_serve.chat_model import RayChatModel, failure
from ech0_moe.serving.records import Acquired, Choice, Message, Reply, SwapEvent
from ech0_moe.serving.runtimes.chat_models import STOP, Deadline, reply_of, run_config

RESIDENCY_TTL_S = 0.5  # the router asks on every query; the table is re-read at most this often


class RayPool:
    """The expert pool of `backend: ray` (same interface as `ExpertPool` for the graph): Ray Serve
    places experts on replicas, one per replica within `ray.replica_budget`."""

    def __init__(self, config: PoolConfig) -> None:
        self.config = config
        self.settings = config.ray_settings()
        self.budget = config.budget_for("ray")
        self.specs: dict[str, ExpertSpec] = {e.name: e for e in config.experts}
        self.events: list[SwapEvent] = []
        self._handle: Any = None
        self._table: tuple[float, list[dict[str, Any]]] = (0.0, [])
        self._lock = threading.Lock()

    @property
    def lanes(self) -> int:
        """How many experts `batch` serves at once: one per replica."""
        return self.settings.replicas

    # questions `batch` keeps in flight per lane: with one waiting behind the one answering, a
    # replica in the middle of a group never shows Ray's router an empty queue
    queue_depth = 2

    def handle(self) -> Any:
        with self._lock:
            if self._handle is None:
                self._handle = app_handle(self.settings)
            return self._handle

    # ---- the cluster's residency ----------------------------------------
    def residency(self, fresh: bool = False) -> list[dict[str, Any]]:
        """The replicas' rows (cached for RESIDENCY_TTL_S unless `fresh`)."""
        at, rows = self._table
        if fresh or time.monotonic() - at > RESIDENCY_TTL_S:
            rows = residency(self.settings)
            self._table = (time.monotonic(), rows)
        return rows

    def loaded_experts(self) -> list[str]:
        """Experts resident on some replica (the router's stay-on-resident rule reads this)."""
        return sorted({r["expert"] for r in self.residency() if r["expert"]})

    def is_loaded(self, name: str) -> bool:
        return name in self.loaded_experts()

    @property
    def loaded_bytes(self) -> int:
        return max((r["bytes"] for r in self.residency()), default=0)

    @property
    def peak_loaded_bytes(self) -> int:
        return max((e.loaded_bytes_after for e in self.events), default=0)

    def expected_bytes(self, name: str) -> int:
        measured = [r["bytes"] for r in self.residency() if r["expert"] == name]
        return max(measured, default=0) or self.specs[name].size_bytes

    def expected_load_seconds(self, name: str) -> float:
        measured = next((e.load_seconds for e in reversed(self.events) if e.expert == name), None)
        return measured if measured is not None else self.expected_bytes(name) / ASSUMED_LOAD_BYTES_PER_S

    def serving_order(self, experts: Sequence[str]) -> list[int]:
        return serving_order(list(experts), set(self.loaded_experts()))

    @property
    def swaps(self) -> int:
        return len(self.events)

    def stats(self) -> dict[str, Any]:
        rows = self.residency(fresh=True)
        return {
            "budget_bytes": self.budget,
            "loaded_bytes": max((r["bytes"] for r in rows), default=0),
            "peak_loaded_bytes": self.peak_loaded_bytes,
            "within_budget": all(r["bytes"] <= r["budget_bytes"] for r in rows),
            "loaded_experts": sorted({r["expert"] for r in rows if r["expert"]}),
            "swaps": len(self.events),
            "load_seconds_total": round(sum(e.load_seconds for e in self.events), 4),
            "replicas": rows,
            "events": [e.__dict__ for e in self.events],
        }

    # ---- answering -------------------------------------------------------
    def _record(self, acquired: Acquired) -> Acquired:
        if acquired.swapped:
            with self._lock:
                self.events.append(
                    SwapEvent(
                        time.time(),
                        acquired.expert,
                        self.specs[acquired.expert].model_key,
                        acquired.served_by,
                        round(acquired.load_seconds, 4),
                        acquired.evicted,
                        self.expected_bytes(acquired.expert),
                    )
                )
            self._table = (0.0, [])  # residency changed
        return acquired

    def ensure_loaded(self, name: str) -> Acquired:
        """Make `name` resident on some replica (Ray picks: the one holding it, else a free one)."""
        handle = self.handle()
        limit = self.settings.timeout
        try:
            out = handle.options(multiplexed_model_id=name).load.remote().result(timeout_s=limit)
        except TimeoutError:  # Ray's GetTimeoutError is one too
            raise BackendError(f"Ray Serve did not load {name!r} within {limit:g} s (ray.timeout)") from None
        except ray_errors() as exc:
            raise BackendError(f"Ray replica failed loading {name!r}: {type(exc).__name__}", transient=True) from None
        if "error" in out:
            raise failure(out)
        return self._record(_acquired(out["acquired"]))

    def chat(
        self, name: str, messages: list[Message], max_tokens: int | None = None, timeout: float | None = None
    ) -> tuple[Reply, Acquired]:
        """Answer with expert `name` on the replica Ray routes it to (streaming its tokens)."""
        spec = self.specs[name]
        cap = max_tokens or spec.max_tokens
        model = RayChatModel(
            handle=self.handle(), expert=name, max_tokens=cap, timeout=timeout, limit=self.settings.timeout
        )
        deadline = Deadline(timeout) if timeout else None
        message = model.invoke([(m["role"], m["content"]) for m in messages], config=run_config(deadline), stop=STOP)
        return reply_of(message), self._record(_acquired(message.response_metadata))

    def choose(
        self, name: str, messages: list[Message], n_choices: int, timeout: float | None = None
    ) -> tuple[Choice, Reply, Acquired]:
        """A multiple-choice answer: the letter read from a short answer (`choices`, method "letter")."""
        answered: list[Acquired] = []

        def chat(m: list[Message], n: int) -> Reply:
            reply, acquired = self.chat(name, m, n, timeout)
            answered.append(acquired)
            return reply

        choice, reply = choose_by_letter(chat, messages, n_choices)
        return choice, reply, answered[0]

    def unload_all(self) -> None:
        """Start cold: the application is replaced by new, empty replicas."""
        deploy(self.config, fresh=True)
        with self._lock:
            self._handle = None
        self._table = (0.0, [])


def _acquired(data: dict[str, Any]) -> Acquired:
    """What a replica reported getting the expert cost (`serving.app`: `asdict(Acquired)`)."""
    return Acquired(
        data["expert"], data["swapped"], data["load_seconds"], tuple(data["evicted"]), served_by=data["served_by"]
    )
