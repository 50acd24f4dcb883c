"""`backend: ray`, client side: the expert pool when the experts are served by Ray Serve.

`RayPool` has the interface of `ExpertPool` that the graph, `batch` and the CLI use, but
loads nothing itself: every request goes to the Serve application (`serve_app`) tagged with
the expert's name (`multiplexed_model_id`), Ray routes it to the replica holding that expert,
and what the replica did (loaded or not, seconds, which replica) comes back with the answer.
Answers stream through `RayChatModel`, a LangChain chat model, so LangGraph's
`stream_mode="messages"` gets their tokens as with the embedded default.

`deploy`, `residency` and `delete` are what `ech0-moe serve` does.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.messages import AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGenerationChunk

from ech0_moe.backends.base import Message
from ech0_moe.backends.chat_models import ROLES, Deadline, Reply, StreamingChatModel, reply_of, run_config
from ech0_moe.choices import Choice, choose_by_letter
from ech0_moe.config import ExpertSpec, PoolConfig, RaySettings
from ech0_moe.errors import BackendError, BudgetError, Ech0Error
from ech0_moe.pool import ASSUMED_LOAD_BYTES_PER_S, Acquired, SwapEvent, serving_order

RESIDENCY_TTL_S = 0.5  # the router asks on every query; the table is re-read at most this often
CONNECT_TIMEOUT_S = 5.0
DEPLOY_TIMEOUT_S = 600.0
CURRENT_CLUSTER_FILE = "/tmp/ray/ray_current_cluster"  # where `ray start --head` leaves its address


def _ray_errors() -> tuple[type[BaseException], ...]:
    import ray.exceptions
    from ray.serve.exceptions import RayServeException

    return (ray.exceptions.RayError, RayServeException)


def gcs_address(address: str) -> str:
    """The head node's host:port that `address` means (`auto`: $RAY_ADDRESS, else the cluster
    `ray start --head` started on this machine)."""
    if address == "auto":
        address = os.environ.get("RAY_ADDRESS", "")
        if not address:
            try:
                address = Path(CURRENT_CLUSTER_FILE).read_text().strip()
            except OSError:
                raise BackendError(
                    "Ray is not running on this machine: start a cluster with `ray start --head` "
                    "or set ray.address in experts.yaml"
                ) from None
    return address.removeprefix("ray://")


def connect(settings: RaySettings) -> None:
    """Join the Ray cluster at `settings.address` (once per process); one line if it is not there.
    The head is probed first: `ray.init` would wait minutes for an absent one."""
    import ray

    if ray.is_initialized():
        return
    target = gcs_address(settings.address)
    host, _, port = target.rpartition(":")
    try:
        socket.create_connection((host or "127.0.0.1", int(port)), timeout=CONNECT_TIMEOUT_S).close()
    except (OSError, ValueError) as exc:
        raise BackendError(
            f"Ray is not reachable at {settings.address!r} ({target}: {getattr(exc, 'strerror', None) or exc}); "
            "start a cluster with `ray start --head` or set ray.address in experts.yaml"
        ) from None
    logging.getLogger("ray.serve").setLevel(logging.ERROR)  # replicas replaced etc.: our errors say it
    try:
        ray.init(address=settings.address, logging_level="ERROR", log_to_driver=False)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise BackendError(f"Ray is not reachable at {settings.address!r}: {str(exc).splitlines()[0]}") from None


def app_handle(settings: RaySettings) -> Any:
    """The deployment handle of the running Serve application `settings.app`."""
    from ray import serve

    connect(settings)
    try:
        return serve.get_app_handle(settings.app)
    except _ray_errors() as exc:
        raise BackendError(
            f"Serve application {settings.app!r} is not running on the Ray cluster at {settings.address!r} "
            f"({str(exc).splitlines()[0]}); deploy it with `ech0-moe serve`"
        ) from None


def deploy(config: PoolConfig, *, fresh: bool = False, timeout: float = DEPLOY_TIMEOUT_S) -> None:
    """Deploy (or update in place) the Serve application for `config`; `fresh` replaces it with
    new, empty replicas. Replicas the cluster cannot place are one error line, not a wait."""
    import ray
    from ray import serve

    from ech0_moe.serve_app import build_app

    settings = settings_of(config)
    connect(settings)
    total = ray.cluster_resources()
    for resource, each in (("CPU", settings.num_cpus), ("GPU", settings.num_gpus)):
        if each and total.get(resource, 0) < each * settings.replicas:
            raise BackendError(
                f"the Ray cluster at {settings.address!r} has {total.get(resource, 0):g} {resource}s in all; "
                f"{settings.replicas} replicas x {each:g} need {each * settings.replicas:g} "
                "(lower ray.replicas or ray.num_cpus/num_gpus, or add nodes)"
            )
    serve.start(proxy_location="Disabled")  # answers travel by handle; no HTTP port is opened
    if fresh:
        serve.delete(settings.app)
    failed: list[BaseException] = []
    done = threading.Event()

    def run() -> None:
        try:
            serve.run(build_app(config), name=settings.app, route_prefix=None)
        except BaseException as exc:
            failed.append(exc)
        finally:
            done.set()

    threading.Thread(target=run, daemon=True).start()
    end = time.monotonic() + timeout
    while not done.wait(1.0):
        problem = deploy_problem(settings.app)
        if problem or time.monotonic() > end:
            raise BackendError(
                f"Serve application {settings.app!r} is not running: {problem or f'not ready after {timeout:g} s'}"
            )
    if failed:
        raise BackendError(f"Serve application {settings.app!r} failed to deploy: {str(failed[0]).splitlines()[0]}")


def deploy_problem(app: str) -> str:
    """Why the application cannot become ready, from `serve.status()`; empty while it may still."""
    from ray import serve

    status = serve.status().applications.get(app)
    if status is None:
        return ""
    if str(status.status).endswith("DEPLOY_FAILED"):
        return (status.message.strip().splitlines() or ["deploy failed"])[-1]
    for name, deployment in status.deployments.items():
        waiting = re.search(
            r"Resources required for each replica: (\{.*?\}), total resources available: (\{.*?\})", deployment.message
        )
        if waiting:
            return (
                f"replicas of {name} cannot be placed (each needs {waiting.group(1)}, the cluster has "
                f"{waiting.group(2)} free): free resources (`ray status`; other applications) or lower ray.replicas"
            )
    return ""


def delete(config: PoolConfig) -> None:
    from ray import serve

    settings = settings_of(config)
    connect(settings)
    serve.delete(settings.app)


def residency(settings: RaySettings) -> list[dict[str, Any]]:
    """Each live replica's row: replica, node, expert, bytes, budget_bytes, loads, last_load_at ..."""
    from ray import serve

    from ech0_moe.serve_app import RESIDENCY_DEPLOYMENT

    app_handle(settings)  # one clear line when the app is not there
    handle = serve.get_deployment_handle(RESIDENCY_DEPLOYMENT, app_name=settings.app)
    try:
        return list(handle.table.remote().result(timeout_s=30))
    except _ray_errors() as exc:
        raise BackendError(f"Ray Serve residency table unavailable: {str(exc).splitlines()[0]}") from None


def settings_of(config: PoolConfig) -> RaySettings:
    if config.ray is None:
        raise Ech0Error(f"{config.path}: no `ray:` settings and no expert uses backend ray")
    return config.ray


class RayChatModel(StreamingChatModel):
    """A LangChain chat model answering through the Serve application: the replica holding
    `expert` streams the tokens back. The last chunk's `response_metadata` carries what the
    replica did: `swapped`, `load_seconds`, `served_by`."""

    handle: Any
    expert: str
    max_tokens: int = 128
    timeout: float | None = None

    @property
    def _llm_type(self) -> str:
        return "ech0-ray-serve"

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        request = {
            "messages": [{"role": ROLES.get(m.type, m.type), "content": str(m.content)} for m in messages],
            "max_tokens": self.max_tokens,
            "timeout": self.timeout,
        }
        stream = self.handle.options(multiplexed_model_id=self.expert, stream=True).chat.remote(request)
        acquired: dict[str, Any] = {}
        reply: dict[str, Any] = {}
        try:
            for item in stream:
                if "error" in item:
                    raise failure(item)
                acquired = _merge_acquired(acquired, item.get("acquired"))
                if "token" in item:
                    chunk = ChatGenerationChunk(message=AIMessageChunk(content=item["token"]))
                    if run_manager:
                        run_manager.on_llm_new_token(item["token"], chunk=chunk)
                    yield chunk
                reply = item.get("reply", reply)
        except _ray_errors() as exc:  # the replica died or was replaced mid-answer: asking again may work
            raise BackendError(
                f"Ray replica failed while answering with {self.expert!r}: {type(exc).__name__}", transient=True
            ) from None
        finally:
            stream.cancel()  # a no-op once finished; stops the replica when we stop early (deadline)
        if not reply:
            raise BackendError(f"Ray replica: the answer of {self.expert!r} was cut off mid-stream", transient=True)
        usage = {
            "input_tokens": reply["prompt_tokens"],
            "output_tokens": reply["completion_tokens"],
            "total_tokens": reply["prompt_tokens"] + reply["completion_tokens"],
        }
        meta = {"finish_reason": "length" if reply["truncated"] else "stop", **acquired}
        yield ChatGenerationChunk(message=AIMessageChunk(content="", response_metadata=meta, usage_metadata=usage))


def failure(payload: dict[str, Any]) -> Ech0Error:
    """The error a replica reported as data (`serve_app._failure`)."""
    if payload.get("budget"):
        return BudgetError(payload["error"])
    return BackendError(payload["error"], transient=bool(payload.get("transient")))


def _merge_acquired(old: dict[str, Any], new: dict[str, Any] | None) -> dict[str, Any]:
    """A reload during the answer adds to the load seen before it."""
    if not new:
        return old
    if not old:
        return dict(new)
    return {
        **new,
        "swapped": old["swapped"] or new["swapped"],
        "load_seconds": old["load_seconds"] + new["load_seconds"],
    }


class RayPool:
    """The expert pool of `backend: ray` (same interface as `ExpertPool` for the graph): Ray Serve
    places experts on replicas, one per replica within `ray.replica_budget`."""

    def __init__(self, config: PoolConfig) -> None:
        self.config = config
        self.settings = settings_of(config)
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
        try:
            out = handle.options(multiplexed_model_id=name).load.remote().result()
        except _ray_errors() as exc:
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
        model = RayChatModel(handle=self.handle(), expert=name, max_tokens=cap, timeout=timeout)
        deadline = Deadline(timeout) if timeout else None
        message = model.invoke([(m["role"], m["content"]) for m in messages], config=run_config(deadline))
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
    """What a replica reported getting the expert cost (`serve_app`: `asdict(Acquired)`)."""
    return Acquired(
        data["expert"], data["swapped"], data["load_seconds"], tuple(data["evicted"]), served_by=data["served_by"]
    )
