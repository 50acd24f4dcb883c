"""compress: shrink retrieved passages and the query preamble, keeping the question."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from langgraph.runtime import Runtime

from ech0_moe.graph.context import Context
from ech0_moe.graph.state import State
from ech0_moe.nodes._common import context, progress, run_services, timed
from ech0_moe.services import ServiceProvider
from ech0_moe.text import count_tokens


def provenance(passage: dict[str, Any]) -> str:
    """Where a retrieved passage came from, as the expert reads it above the quoted text."""
    owner = passage.get("owner") or "shared"
    if passage["kind"] == "learned":
        expert = passage["source"].removeprefix("learned:")
        return f"an earlier answer by expert {expert} (memory of {owner}; unverified)"
    where = Path(passage["source"]).name + (f", page {passage['page']}" if passage.get("page") else "")
    where += f", section {passage['heading']!r}" if passage.get("heading") else ""
    return f"document {where} (namespace {owner})"


@timed("compress")
def compress(state: State, runtime: Runtime[Context], services: ServiceProvider) -> dict[str, Any]:
    """Compress to the context's `compression_target` with its `compression_method`; what came
    from memory reaches the prompt quoted as data under each passage's provenance (`safety.quote`)."""
    ctx = context(runtime)
    texts = [c["text"] for c in state.retrieved_contexts]
    compressor = run_services(runtime, services).compressor(ctx.compression_method)
    result = compressor.compress(state.query, texts, ctx.compression_target)
    sources = [provenance(c) for c in state.retrieved_contexts]
    compressible = result.original_tokens - count_tokens(result.question)  # the question is always kept whole
    progress(
        "compressed",
        requested=ctx.compression_target,
        achieved=result.ratio,
        method=result.method,
        compressible=compressible,
    )
    return {
        "prompt": result.prompt(sources),
        "compression_ratio": result.ratio,
        "compression_method": result.method,
        "tokens": {
            "prompt_before_compression": result.original_tokens,
            "prompt_after_compression": result.compressed_tokens,
        },
    }
