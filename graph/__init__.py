"""ECH0 MoE as a LangGraph graph: `build_graph()` or the ready-made `graph`."""

from graph.builder import build_graph
from graph.context import Context
from graph.state import InputState, OutputState, State

__all__ = ["Context", "InputState", "OutputState", "State", "build_graph", "graph"]


def __getattr__(name: str):  # lazily compiled so importing `graph` stays cheap
    if name == "graph":
        return build_graph()
    raise AttributeError(name)
