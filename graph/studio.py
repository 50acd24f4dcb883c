"""Entry point for `langgraph.json` (LangGraph Studio / `langgraph dev`): the one compiled graph."""

from ech0_moe.graph.builder import build_graph
from ech0_moe.graph.server_log import quiet_rejected_input

quiet_rejected_input()
graph = build_graph()
