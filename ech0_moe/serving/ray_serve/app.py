"""The Ray Serve application behind `backend: ray` (replica side).

Each replica of `ExpertReplica` runs an ordinary `ExpertPool` (the same llama.cpp code as the
embedded default, or a node-local Ollama) with the replica's byte budget, and holds at most one
expert at a time (`@serve.multiplexed`, one model per replica: a request tagged with another
expert's name evicts the replica's expert and loads it). Which replica gets a request is the
`Dispatcher`'s decision (`dispatch.py`: concurrent requests grouped by expert, the ingress when
`ray.fairness` > 0), else Ray's multiplexing (the replica holding the expert, if any). Every
answer reports what the replica did (loaded or not, seconds, which replica), so the graph's
metadata stays true.

`Residency` is a one-replica deployment of the same application: a table of what each replica
holds (expert, bytes, last load), read by `ech0-moe serve --status` and by the router's
stay-on-resident rule and the dispatcher's list of replicas.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import asdict, replace
from typing import Any

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.runnables import RunnableLambda
from ray import serve

from ech0_moe.config import PoolConfig
from ech0_moe.errors import BackendError, BudgetError, Ech0Error
from ech0_moe.paths import resolve_model_ref
from ech0_moe.serving.local.pool import ExpertPool
from ech0_moe.serving.records import Acquired
from ech0_moe.serving.runtimes.base import Runtime
from ech0_moe.serving.runtimes.llamacpp import LlamaCppRuntime

EXPERTS_DEPLOYMENT = "ExpertReplica"
RESIDENCY_DEPLOYMENT = "Residency"


def replica_config(config: PoolConfig) -> PoolConfig:
    """The pool one replica runs: every expert on its runtime, its model reference resolved on
    this node (`pkg:`, `cache:` or relative to where experts.yaml was), the replica's budget."""
    base = config.path.parent
    experts = []
    for e in config.experts:
        model = e.model
        if e.runtime == "llamacpp":
            with contextlib.suppress(Ech0Error):  # if not, loading it fails with a line naming the node
                model = str(resolve_model_ref(e.model, base))
        experts.append(replace(e, placement="local", model=model))
    return replace(config, experts=tuple(experts), memory_budget=config.budget_for("ray"), host_budgets={}, ray=None)


class _Tokens(BaseCallbackHandler):
    """Hands each generated token to `put` (the replica streams them back as they come)."""

    def __init__(self, put: Callable[[str], None]) -> None:
        self.put = put

    def on_llm_new_token(self, token: str, **kwargs: Any) -> None:
        self.put(token)


class _Resident:
    """The model object Ray's multiplexer caches: one expert made resident in the replica's pool.
    Evicting it (`__del__`, called by Ray) unloads the expert once its answers are done."""

    def __init__(self, replica: ExpertReplica, name: str, acquired: Acquired) -> None:
        self.replica, self.name, self.acquired = replica, name, acquired
        self._unreported = acquired.swapped
        self._closed = False

    def claim(self) -> Acquired:
        """What getting the expert cost this request: the load, for the first request only."""
        if self._unreported:
            self._unreported = False
            return self.acquired
        return Acquired(self.name, False, 0.0, served_by=self.acquired.served_by)

    def __del__(self) -> None:
        if not self._closed:  # Ray calls it on eviction; the garbage collector may call it again
            self._closed = True
            self.replica.pool.unload(self.name)
            self.replica.evicted.append(self.name)
            self.replica.report(expert="", bytes=0)


@serve.deployment(name=RESIDENCY_DEPLOYMENT, num_replicas=1, ray_actor_options={"num_cpus": 0})
class Residency:
    """What every expert replica holds, as the replicas last reported it."""

    def __init__(self) -> None:
        self.rows: dict[str, dict[str, Any]] = {}

    def report(self, row: dict[str, Any]) -> None:
        self.rows[row["replica"]] = {**self.rows.get(row["replica"], {}), **row}

    def table(self) -> list[dict[str, Any]]:
        """Rows of the replicas still alive (a replica Ray replaced is dropped)."""
        import ray

        alive = []
        for row in self.rows.values():
            try:
                ray.get_actor(row["actor"], namespace="serve")
            except ValueError:
                continue
            alive.append(row)
        return sorted(alive, key=lambda r: r["started"])


@serve.deployment(name=EXPERTS_DEPLOYMENT)
class ExpertReplica:
    """One replica: at most one resident expert within the replica's budget."""

    def __init__(self, config: PoolConfig, residency: Any) -> None:
        import ray

        settings = config.ray_settings()
        threads = settings.threads or max(1, int(settings.num_cpus))
        runtimes: dict[str, Runtime] = {"llamacpp": LlamaCppRuntime(n_threads=threads)}
        self.pool = ExpertPool(replica_config(config), runtimes)
        context = serve.get_replica_context()
        self.replica_id = context.replica_id.unique_id
        self.node = socket.gethostname()
        self.residency = residency
        self.row: dict[str, Any] = {
            "replica": self.replica_id,
            "actor": ray.get_runtime_context().get_actor_name() or "",
            "node": self.node,
            "pid": os.getpid(),
            "expert": "",
            "bytes": 0,
            "budget_bytes": self.pool.budget,
            "loads": 0,
            "last_load_at": 0.0,
            "last_load_seconds": 0.0,
            "started": time.time(),
        }
        self.evicted: list[str] = []  # experts Ray's multiplexer evicted since the last load
        self._lock = threading.Lock()
        self.report()

    @property
    def served_by(self) -> str:
        return f"ray:{self.replica_id}@{self.node}"

    def report(self, **changes: Any) -> None:
        """Update this replica's row in the residency table (fire and forget)."""
        with self._lock:
            self.row.update(changes)
            row = dict(self.row)
        self.residency.report.remote(row)

    @serve.multiplexed(max_num_models_per_replica=1)
    async def _expert(self, name: str) -> _Resident:
        if name not in self.pool.specs:
            raise Ech0Error(f"unknown expert {name!r}; known: {', '.join(self.pool.specs)}")
        acquired = await asyncio.to_thread(self.pool.ensure_loaded, name)
        evicted, self.evicted = tuple(self.evicted) + acquired.evicted, []
        acquired = replace(acquired, served_by=self.served_by, evicted=evicted)
        if acquired.swapped:
            self.report(
                expert=name,
                bytes=self.pool.loaded_bytes,
                loads=self.row["loads"] + 1,
                last_load_at=time.time(),
                last_load_seconds=round(acquired.load_seconds, 4),
            )
        return _Resident(self, name, acquired)

    async def _acquire(self) -> Acquired:
        """Make the request's expert (its multiplexed model id) resident here; what that cost."""
        try:
            resident = await self._expert(serve.get_multiplexed_model_id())
        except Ech0Error as exc:
            raise _failure(exc, self.node) from None
        return resident.claim()

    async def load(self) -> dict[str, Any]:
        """Make the expert resident (the graph's swap_load)."""
        try:
            return {"acquired": asdict(await self._acquire())}
        except _Failed as failed:
            return failed.payload

    async def chat(self, request: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        """Answer with the request's expert, streaming: `{"acquired"}`, then `{"token"}`s, then
        `{"reply"}` - or `{"error", "transient"}`."""
        try:
            acquired = await self._acquire()
        except _Failed as failed:
            yield failed.payload
            return
        yield {"acquired": asdict(acquired)}
        name = acquired.expert
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

        def put(item: dict[str, Any]) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, item)

        def generate(_: Any) -> None:
            try:
                messages, cap = request["messages"], request.get("max_tokens")
                reply, again = self.pool.chat(name, messages, cap, request.get("timeout"))
                item: dict[str, Any] = {"reply": asdict(reply)}
                if again.swapped:  # evicted by a request for another expert and loaded again
                    item["acquired"] = asdict(replace(again, served_by=self.served_by))
                put(item)
            except Ech0Error as exc:
                put(_failure(exc, self.node).payload)

        tokens = _Tokens(lambda t: put({"token": t}))
        worker = threading.Thread(
            target=lambda: RunnableLambda(generate).invoke(None, config={"callbacks": [tokens]}), daemon=True
        )
        worker.start()
        while True:
            item = await queue.get()
            yield item
            if "token" not in item:
                return


class _Failed(Exception):
    def __init__(self, payload: dict[str, Any]) -> None:
        self.payload = payload


def _failure(exc: Ech0Error, node: str) -> _Failed:
    """An expert's failure as data: one line naming the node (Ray would wrap an exception in a traceback)."""
    transient = isinstance(exc, BackendError) and exc.transient
    return _Failed(
        {"error": f"on Ray node {node}: {exc}", "transient": transient, "budget": isinstance(exc, BudgetError)}
    )


def build_app(config: PoolConfig) -> Any:
    """The Serve application for `config` (its `ray:` settings size and place the replicas). With
    `ray.fairness` > 0 its ingress is the `Dispatcher`, which groups concurrent requests by expert
    and pins each to a replica; with 0, Ray's multiplexing routes each request on its own."""
    settings = config.ray_settings()
    options: dict[str, Any] = {
        "num_replicas": settings.replicas,
        "max_ongoing_requests": settings.max_ongoing_requests,
        "ray_actor_options": {"num_cpus": settings.num_cpus, "num_gpus": settings.num_gpus},
    }
    residency = Residency.bind()
    if not settings.fairness:
        return ExpertReplica.options(**options).bind(config, residency)
    from ray.serve.config import RequestRouterConfig

    from ech0_moe.serving.ray_serve.dispatch import Dispatcher

    router = RequestRouterConfig(request_router_class="ech0_moe.serving.ray_serve.dispatch.PinnedRouter")
    experts = ExpertReplica.options(**options, request_router_config=router).bind(config, residency)
    return Dispatcher.bind(experts, residency, settings.fairness)
