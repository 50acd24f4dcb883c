"""Entry point for `langgraph.json` (LangGraph Studio / `langgraph dev`): the one compiled graph."""

from ech0_moe.graph.builder import build_graph

graph = build_graph()
