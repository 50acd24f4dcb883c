"""Shared helpers for nodes: per-node timing, the run's context and its services."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from typing import Any, TypeVar

from langgraph.config import get_config, get_stream_writer
from langgraph.runtime import Runtime

from ech0_moe.graph.context import Context
from ech0_moe.owners import LOCAL, owner_of_identity
from ech0_moe.services import ServiceProvider, Services

F = TypeVar("F", bound=Callable[..., dict[str, Any]])


def timed(name: str) -> Callable[[F], F]:
    """Add ``{name: seconds}`` to the node's `timings` update."""

    def wrap(fn: F) -> F:
        @functools.wraps(fn)
        def inner(*args: Any, **kwargs: Any) -> dict[str, Any]:
            t0 = time.perf_counter()
            update = fn(*args, **kwargs)
            extra = update.pop("timings", {})
            update["timings"] = {name: round(time.perf_counter() - t0, 4), **extra}
            return update

        return inner  # type: ignore[return-value]

    return wrap


def progress(event: str, **fields: Any) -> None:
    """A progress event for `stream_mode="custom"` (ignored unless the caller streams it)."""
    get_stream_writer()({"event": event, **fields})


def context(runtime: Runtime[Context]) -> Context:
    """The run's context (the defaults when the caller passed none)."""
    return runtime.context if runtime.context is not None else Context()


def asker(runtime: Runtime[Context]) -> str:
    """Who is asking (`owners`): `Context.user`, else the user a LangGraph server authenticated
    for this run (two Studio users are two owners), else the one local owner."""
    ctx = context(runtime)
    if ctx.user:
        return ctx.user
    server = getattr(runtime, "server_info", None)  # set by a LangGraph server; None in plain LangGraph
    user = getattr(server, "user", None)
    if user is not None:
        try:
            return owner_of_identity(user.identity)
        except (AttributeError, NotImplementedError):
            pass
    try:
        configurable = get_config().get("configurable") or {}
    except RuntimeError:  # called outside a run
        return LOCAL
    return owner_of_identity(configurable.get("langgraph_auth_user_id"))


def run_services(runtime: Runtime[Context], services: ServiceProvider) -> Services:
    """The services for this run as its asker uses them: the injected ones, or the registry's for
    the context's files."""
    ctx = context(runtime)
    return services.for_run(ctx.experts_file, ctx.kb_dir, asker(runtime))
