"""The embedded expert pool and swap manager (`Pool` for llama.cpp and Ollama experts).

Invariant, per device (this process for llama.cpp, each Ollama host for its
experts): the bytes of resident models plus the bytes reserved for models being
loaded (plus, on an Ollama host, models other clients loaded there) never
exceed that device's memory budget. A model in use (answering) is never
evicted; a request that cannot fit waits until the user is done. Experts
sharing one weights file share one resident model (no swap). N Ollama hosts
with their own budgets keep N experts awake at once.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict
from typing import Any

from ech0_moe.choices import LETTERS, choose_by_letter
from ech0_moe.config import ExpertSpec, PoolConfig, format_size
from ech0_moe.errors import BudgetError
from ech0_moe.serving.local.grouping import DEFAULT_FAIRNESS_S, HOLD_S, Grouping
from ech0_moe.serving.pool import ASSUMED_LOAD_BYTES_PER_S, serving_order
from ech0_moe.serving.records import Acquired, Choice, LoadedModel, Message, Reply, SwapEvent
from ech0_moe.serving.runtimes import Runtime, make_runtime
from ech0_moe.serving.runtimes.chat_models import Deadline

RELOAD_THRESHOLD_S = 0.05  # a load_duration above this, reported with an answer, means a reload


class ExpertPool:
    """Thread-safe pool: loads the expert asked for, evicting idle ones so each device's budget holds."""

    def __init__(
        self, config: PoolConfig, runtimes: dict[str, Runtime] | None = None, fairness: float = DEFAULT_FAIRNESS_S
    ) -> None:
        self.config = config
        self.fairness = fairness
        self.budget = config.memory_budget
        self.specs: dict[str, ExpertSpec] = {e.name: e for e in config.experts}
        self._runtimes: dict[str, Runtime] = dict(runtimes or {})
        self._loaded: dict[str, LoadedModel] = {}
        self._reserved: dict[str, tuple[str, int]] = {}  # model key -> (device, bytes)
        self._foreign: dict[str, dict[str, int]] = {}  # device -> models other clients loaded there
        self._cond = threading.Condition()
        self.events: list[SwapEvent] = []
        self._peak: dict[str, int] = {}
        self._estimates: dict[str, int] = {}  # model key -> bytes, for experts.yaml entries without a size
        self._unloading: dict[str, int] = {}  # device -> bytes of evicted models still being unloaded
        self._groups: dict[str, Grouping] = {}  # device -> its requests waiting, by model (`pool.grouping`)

    # ---- introspection -------------------------------------------------
    def runtime(self, name: str) -> Runtime:
        with self._cond:
            if name not in self._runtimes:
                self._runtimes[name] = make_runtime(name)
            return self._runtimes[name]

    def _spec_for_key(self, key: str) -> ExpertSpec:
        return next(s for s in self.specs.values() if s.model_key == key)

    @property
    def loaded_bytes(self) -> int:
        """Resident bytes on the busiest device (the one the budget question is about)."""
        with self._cond:
            return max((self._resident(d) for d in self._devices()), default=0)

    @property
    def peak_loaded_bytes(self) -> int:
        return max(self._peak.values(), default=0)

    def loaded_experts(self) -> list[str]:
        """Names of experts whose model is resident (several if they share a file)."""
        with self._cond:
            return [n for n, s in self.specs.items() if s.model_key in self._loaded]

    def is_loaded(self, name: str) -> bool:
        with self._cond:
            return self.specs[name].model_key in self._loaded

    def expected_bytes(self, name: str) -> int:
        """Bytes expert `name` needs: what its last load measured, else experts.yaml's size (0 = not known yet)."""
        spec = self.specs[name]
        with self._cond:
            return self._estimates.get(spec.model_key) or spec.size_bytes

    def expected_load_seconds(self, name: str) -> float:
        """Seconds loading expert `name` should take: its model's last measured load, or
        before any, its size at ASSUMED_LOAD_BYTES_PER_S (0 when the size is not known yet)."""
        spec = self.specs[name]
        with self._cond:
            measured = next((e.load_seconds for e in reversed(self.events) if e.model_key == spec.model_key), None)
        return measured if measured is not None else self.expected_bytes(name) / ASSUMED_LOAD_BYTES_PER_S

    def serving_order(self, experts: Sequence[str]) -> list[int]:
        """Indices of `experts` in the order to serve them with the fewest swaps (`serving_order`)."""
        with self._cond:
            keys = [self.specs[e].model_key for e in experts]
            resident = set(self._loaded)
        return serving_order(keys, resident)

    @property
    def swaps(self) -> int:
        return len(self.events)

    lanes = 1  # experts `batch` serves at once: one in process (one budget, one CPU/GPU)
    queue_depth = 1  # questions `batch` keeps in flight per lane (see `RayPool.queue_depth`)

    def stats(self) -> dict[str, Any]:
        with self._cond:
            devices = {
                d: {
                    "budget_bytes": self.config.budget_for(d),
                    "loaded_bytes": self._resident(d),
                    "peak_loaded_bytes": self._peak.get(d, 0),
                    "foreign_models": dict(self._foreign.get(d, {})),
                }
                for d in self._devices()
            }
            return {
                "budget_bytes": self.budget,
                "loaded_bytes": max((v["loaded_bytes"] for v in devices.values()), default=0),
                "peak_loaded_bytes": self.peak_loaded_bytes,
                "within_budget": all(v["peak_loaded_bytes"] <= v["budget_bytes"] for v in devices.values()),
                "loaded_experts": [n for n, s in self.specs.items() if s.model_key in self._loaded],
                "swaps": len(self.events),
                "load_seconds_total": round(sum(e.load_seconds for e in self.events), 4),
                "devices": devices,
                "events": [asdict(e) for e in self.events],
            }

    # ---- accounting (call with the lock held) --------------------------
    def _devices(self) -> list[str]:
        return sorted({s.device for s in self.specs.values()})

    def _resident(self, device: str) -> int:
        return sum(m.size_bytes for m in self._loaded.values() if m.device == device)

    def _used(self, device: str) -> int:
        reserved = sum(b for d, b in self._reserved.values() if d == device)
        pending = self._unloading.get(device, 0)  # evicted, still being unloaded: still in memory
        return self._resident(device) + reserved + pending + sum(self._foreign.get(device, {}).values())

    def _pick_victims(
        self, device: str, need: int, *, held: bool = False, wanted: frozenset[str] = frozenset()
    ) -> list[LoadedModel]:
        """Take idle models on `device` off the books, least recently used first, until `need`
        bytes will be free; their bytes count as unloading until `_unload` has run. Not idle
        (unless `held`): a model held for the answer after its `ensure_loaded`, or one with
        requests waiting for it (`wanted`)."""
        victims: list[LoadedModel] = []
        budget = self.config.budget_for(device)
        now = time.monotonic()
        while budget - self._used(device) < need:
            idle = sorted(
                (
                    m
                    for m in self._loaded.values()
                    if m.users == 0 and m.device == device and (held or not (m.held(now) or m.key in wanted))
                ),
                key=lambda m: m.last_used,
            )
            if not idle:
                break
            victims.append(self._take(idle[0]))
        return victims

    def _take(self, victim: LoadedModel) -> LoadedModel:
        """Take an idle model off the books; its bytes count as unloading until `_unload` has run."""
        del self._loaded[victim.key]  # first: nothing is counted as loaded that may not be
        self._unloading[victim.device] = self._unloading.get(victim.device, 0) + victim.size_bytes
        return victim

    def _unload(self, victims: list[LoadedModel]) -> list[str]:
        """Unload models `_pick_victims` chose - without the lock: a slow or hung host must not
        block requests for experts on other devices. Returns the experts' names."""
        names = []
        for victim in victims:
            spec = self._spec_for_key(victim.key)
            try:
                self.runtime(spec.runtime).unload(spec, victim.handle)
            finally:
                with self._cond:
                    self._unloading[victim.device] -= victim.size_bytes
                    self._cond.notify_all()
            names.append(spec.name)
        return names

    def _reconcile(self, spec: ExpertSpec, resident: dict[str, int] | None) -> None:
        """Ollama: align with what the host really holds (`resident`, from /api/ps, fetched
        without the lock). Another client may have loaded models (counted against the host's
        budget; ours are adopted) or keep_alive may have expired ours (forgotten)."""
        if resident is None:
            return
        device = spec.device
        ours = {s.model_key: s for s in self.specs.values() if s.device == device}
        for key, model in list(self._loaded.items()):
            if model.device == device and model.users == 0 and ours[key].model not in resident:
                del self._loaded[key]
        foreign: dict[str, int] = {}
        for name, size in resident.items():
            match = next((s for s in ours.values() if s.model == name), None)
            if match is None:
                foreign[name] = size
            elif match.model_key not in self._loaded and match.model_key not in self._reserved:
                handle = self.runtime(spec.runtime).adopt(match)
                self._loaded[match.model_key] = LoadedModel(match.model_key, handle, size, 0.0, device=device)
        self._foreign[device] = foreign

    # ---- acquiring -----------------------------------------------------
    def _acquire(self, name: str) -> tuple[LoadedModel, Acquired]:
        spec = self.specs[name]
        key, device = spec.model_key, spec.device
        budget = self.config.budget_for(device)
        runtime = self.runtime(spec.runtime)
        need = self.expected_bytes(name) or runtime.estimate_size(spec)
        self._estimates[key] = need  # asked once per model, not on every request
        if need > budget:
            raise BudgetError(
                f"expert {name!r} needs {format_size(need)}, more than the budget {format_size(budget)} of {device}"
            )
        evicted: list[str] = []
        with self._cond:
            group = self._groups.setdefault(device, Grouping(self.fairness))
            ticket = group.arrive(key)
        try:
            while True:
                resident = runtime.resident(spec)  # network (Ollama): never under the lock
                victims: list[LoadedModel] = []
                with self._cond:
                    self._reconcile(spec, resident)
                    here = {k for k, m in self._loaded.items() if m.device == device} | {
                        k for k, (d, _) in self._reserved.items() if d == device
                    }
                    model = self._loaded.get(key)
                    # one request on a model at a time (answers take turns on its lock anyway): the
                    # rest wait here, where a file waiting past the bound can stop more from joining
                    if model is not None and model.users == 0 and not group.starving(exclude=here):
                        group.grant(ticket)
                        model.users += 1
                        model.last_used = time.monotonic()
                        return model, Acquired(name, False, 0.0, served_by=device)
                    if model is None and key not in self._reserved:
                        if group.first(k for k in group.waiting if k not in here) != key:
                            self._cond.wait(timeout=1.0)  # another model has waited longer: its turn
                            continue
                        if budget - self._used(device) >= need:
                            group.grant(ticket)
                            self._reserved[key] = (device, need)
                            break
                        # a model with requests waiting keeps the memory unless this one starves
                        starved = key in group.starving(exclude=here)
                        wanted = frozenset() if starved else frozenset(k for k in group.waiting if k != key)
                        victims = self._pick_victims(device, need, wanted=wanted)
                        now = time.monotonic()
                        mine = [m for m in self._loaded.values() if m.device == device]
                        busy = any(m.users or m.held(now) or m.key in wanted for m in mine) or any(
                            d == device for d, _ in self._reserved.values()
                        )
                        if not victims and not busy and not self._unloading.get(device):
                            # only models we do not manage are in the way: waiting would not help
                            foreign = ", ".join(sorted(self._foreign.get(device, {}))) or "nothing"
                            raise BudgetError(
                                f"expert {name!r} ({format_size(need)}) does not fit on {device}: "
                                f"other clients hold {foreign}; unload them or raise that host's budget"
                            )
                    if not victims:
                        self._cond.wait(timeout=1.0)
                evicted += self._unload(victims)
        except BaseException:
            with self._cond:
                group.cancel(ticket)
                self._cond.notify_all()
            raise
        t0 = time.perf_counter()
        try:
            handle, size = runtime.load(spec)
        except BaseException:
            with self._cond:
                del self._reserved[key]
                self._cond.notify_all()
            raise
        seconds = time.perf_counter() - t0
        if size > budget:  # its real footprint: file plus what the runtime allocates beside it
            runtime.unload(spec, handle)
            with self._cond:
                del self._reserved[key]
                self._cond.notify_all()
            raise BudgetError(
                f"expert {name!r} takes {format_size(size)} once loaded (weights, KV cache and compute buffer), "
                f"more than the budget {format_size(budget)} of {device}"
            )
        with self._cond:
            self._estimates[key] = size
            del self._reserved[key]
            model = LoadedModel(key, handle, size, seconds, users=1, last_used=time.monotonic(), device=device)
            self._loaded[key] = model
            used = self._used(device)
            self._peak[device] = max(self._peak.get(device, 0), used)
            self.events.append(SwapEvent(time.time(), name, key, device, round(seconds, 4), tuple(evicted), used))
            self._cond.notify_all()
        return model, Acquired(name, True, seconds, tuple(evicted), served_by=device)

    def _release(self, model: LoadedModel) -> None:
        with self._cond:
            model.users -= 1
            model.last_used = time.monotonic()
            self._cond.notify_all()

    @contextmanager
    def use(self, name: str, *, answer: bool = True) -> Iterator[tuple[LoadedModel, Acquired]]:
        """Hold expert `name` resident for the duration of the block (`answer`: an answer one of
        the `ensure_loaded` holds was waiting for)."""
        model, acquired = self._acquire(name)
        if answer and model.expected:
            with self._cond:
                model.expected -= 1
        try:
            yield model, acquired
        finally:
            self._release(model)

    def ensure_loaded(self, name: str) -> Acquired:
        """Make `name` resident (swapping others out if needed) and return what that cost. The
        model is then held for HOLD_S: the graph's answer request for it follows (`pool.grouping`)."""
        with self.use(name, answer=False) as (model, acquired):
            with self._cond:
                model.expected += 1
                model.hold_until = time.monotonic() + HOLD_S
            return acquired

    def chat(
        self, name: str, messages: list[Message], max_tokens: int | None = None, timeout: float | None = None
    ) -> tuple[Reply, Acquired]:
        """Answer with expert `name`, loading it first if another expert is resident; a generation
        still running after `timeout` seconds ends with a `BackendError`."""
        spec = self.specs[name]
        with self.use(name) as (model, acquired), model.lock:
            deadline = Deadline(timeout) if timeout else None
            runtime = self.runtime(spec.runtime)
            reply = runtime.chat(spec, model.handle, messages, max_tokens or spec.max_tokens, deadline)
        reloaded = getattr(model.handle, "last_load_duration", 0.0)
        if reloaded > RELOAD_THRESHOLD_S and not acquired.swapped:
            # the server had to load the model for this answer (its keep_alive ran out between
            # our check and the request): a swap all the same, so it is counted as one
            with self._cond:
                self.events.append(
                    SwapEvent(
                        time.time(), name, spec.model_key, spec.device, round(reloaded, 4), (), self._used(spec.device)
                    )
                )
            acquired = Acquired(name, True, reloaded, served_by=spec.device)
        return reply, acquired

    def choose(
        self, name: str, messages: list[Message], n_choices: int, timeout: float | None = None
    ) -> tuple[Choice, Reply, Acquired]:
        """Answer a multiple-choice question (`messages` list the lettered options) with expert
        `name`: by the letters' log-probabilities where the runtime gives them, else by reading
        the letter of a short answer (`choices`)."""
        spec = self.specs[name]
        with self.use(name) as (model, acquired), model.lock:
            scores = self.runtime(spec.runtime).score_letters(spec, model.handle, messages, LETTERS[:n_choices])
        if scores is not None:
            best = max(range(n_choices), key=lambda i: scores[i])
            return Choice(best, tuple(scores), "loglik"), Reply(""), acquired
        choice, reply = choose_by_letter(lambda m, n: self.chat(name, m, n, timeout)[0], messages, n_choices)
        return choice, reply, acquired

    def unload(self, name: str) -> None:
        """Unload expert `name`'s model as soon as no answer is using it (nothing if not resident)."""
        key = self.specs[name].model_key
        with self._cond:
            while (model := self._loaded.get(key)) is not None and model.users:
                self._cond.wait(timeout=1.0)
            victims = [self._take(model)] if model is not None else []
        self._unload(victims)

    def unload_all(self) -> None:
        """Unload every idle model (benchmarks: start cold)."""
        with self._cond:
            victims = [
                v for d in self._devices() for v in self._pick_victims(d, self.config.budget_for(d) + 1, held=True)
            ]
        self._unload(victims)
