"""Shared helpers for nodes: per-node timing and access to the services."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from typing import Any, TypeVar

from langgraph.runtime import Runtime

from ech0_moe.errors import Ech0Error
from ech0_moe.services import Services
from graph.context import Context
from graph.state import MODES, State

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


def services(runtime: Runtime[Context]) -> Services:
    """Services for this run's context (the default context when none was passed)."""
    ctx = runtime.context if runtime.context is not None else Context()
    return ctx.services()


def context(runtime: Runtime[Context]) -> Context:
    return runtime.context if runtime.context is not None else Context()


def resolve_mode(state: State, ctx: Context) -> str:
    """The run's mode: the input's, else the context default; unknown modes are an error."""
    mode = (state.mode or ctx.mode).strip().lower()
    if mode not in MODES:
        raise Ech0Error(f"unknown mode {mode!r}; use one of {', '.join(MODES)}")
    return mode
