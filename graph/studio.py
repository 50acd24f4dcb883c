"""Entry point for `langgraph.json` (LangGraph Studio / `langgraph dev`)."""

from graph.builder import build_graph

graph = build_graph()
