"""ECH0 MoE as a LangGraph graph (`ech0_moe.graph`): `build_graph()`, `Context`, the state schemas.

Attributes load on first use, so `from ech0_moe.graph.context import Context` does not
import LangGraph.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "build_graph": "ech0_moe.graph.builder",
    "GRAPH_NAME": "ech0_moe.graph.builder",
    "Context": "ech0_moe.graph.context",
    "InputState": "ech0_moe.graph.state",
    "OutputState": "ech0_moe.graph.state",
    "State": "ech0_moe.graph.state",
    "result_of": "ech0_moe.graph.state",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'ech0_moe.graph' has no attribute {name!r}")
