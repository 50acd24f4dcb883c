"""prepare: validate the input and start a clean run (also on a reused thread)."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from langgraph.runtime import Runtime

from ech0_moe.text import check_query
from graph.context import Context
from graph.state import OutputState, State
from nodes._common import context, resolve_mode


def prepare(state: State, runtime: Runtime[Context]) -> dict[str, Any]:
    """Reject empty or huge queries and unknown modes; reset every per-run field."""
    check_query(state.query)
    mode = resolve_mode(state, context(runtime))
    fresh = asdict(OutputState())
    fresh.update(
        mode=mode,
        timings=None,
        answers=None,
        prompt="",
        domain="",
        candidates=[],
        ensemble_id="",
        learned_id="",
    )
    return fresh
