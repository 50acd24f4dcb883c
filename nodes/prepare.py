"""prepare: validate the input and start a clean run (also on a reused thread)."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from langgraph.runtime import Runtime

from ech0_moe.choices import check_choices
from ech0_moe.errors import InputError
from ech0_moe.graph.context import MODES, Context
from ech0_moe.graph.state import OutputState, State
from ech0_moe.nodes._common import context
from ech0_moe.text import check_query


def resolve_mode(mode: object, ctx: Context) -> str:
    """The run's mode: the input's, else the context's; anything else is an `InputError`."""
    if mode in (None, ""):
        return ctx.mode
    if not isinstance(mode, str) or mode.strip().lower() not in MODES:
        raise InputError(f"unknown mode {mode!r}; use one of {', '.join(MODES)}")
    return mode.strip().lower()


def prepare(state: State, runtime: Runtime[Context]) -> dict[str, Any]:
    """Reject empty or huge queries and unknown modes; reset every per-run field."""
    check_query(state.query)
    if not isinstance(state.expert, str):
        raise InputError(f"expert must be an expert's name (text), got {type(state.expert).__name__}")
    choices = check_choices(state.choices)
    mode = resolve_mode(state.mode, context(runtime))
    fresh = asdict(OutputState())
    fresh.update(
        mode=mode,
        choices=choices,
        timings=None,
        tokens=None,
        responses=None,
        warnings=None,
        prompt="",
        domain="",
        candidates=[],
        ensemble_id="",
    )
    return fresh
