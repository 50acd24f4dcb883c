"""compress: shrink retrieved contexts and the query preamble, keeping the question."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from langgraph.runtime import Runtime

from graph.context import Context
from graph.state import State
from nodes._common import context, services, timed


@timed("compress")
def compress(state: State, runtime: Runtime[Context]) -> dict[str, Any]:
    """Compress to the context's `compression_ratio` with its `compression_method`; the prompt
    names each context's provenance (a document, or an unverified past answer)."""
    ctx = context(runtime)
    texts = [c["text"] for c in state.retrieved_contexts]
    result = services(runtime).compress(ctx.compression_method, state.query, texts, ctx.compression_ratio)
    sources = [
        f"past answer by {c['source'].removeprefix('learned:')}, unverified"
        if c["kind"] == "learned"
        else Path(c["source"]).name
        for c in state.retrieved_contexts
    ]
    return {
        "prompt": result.prompt(sources),
        "compression_ratio": result.ratio,
        "compression_method": result.method,
    }
