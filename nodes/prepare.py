"""prepare: validate the input and start a clean run (also on a reused thread)."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from langgraph.runtime import Runtime

from ech0_moe.errors import Ech0Error
from graph.context import Context
from graph.state import OutputState, State
from nodes._common import context, resolve_mode

MAX_QUERY_CHARS = 32_000


def check_query(query: str) -> None:
    """Raise `Ech0Error` for an empty or oversized query."""
    if not query or not query.strip():
        raise Ech0Error("empty query: ask a question")
    if len(query) > MAX_QUERY_CHARS:
        raise Ech0Error(f"query too long: {len(query)} characters (limit {MAX_QUERY_CHARS})")


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
