"""Wire the nodes into the ECH0 MoE graph (every path starts with `prepare`: validation + reset).

optimized: retrieve -> compress -> route -> swap_load -> answer -> learn
fast:                  compress -> route -> swap_load -> answer
basic:                             route -> swap_load -> answer
ensemble:  retrieve -> compress -> route => expert_answer x k (Send, one at a time) -> combine -> learn
"""

from __future__ import annotations

from typing import Literal

from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph
from langgraph.types import Send

from graph.context import Context
from graph.state import ExpertTask, InputState, OutputState, State
from nodes import answer, combine_answers, compress, expert_answer, learn, prepare, retrieve, route, swap_load

GRAPH_NAME = "ech0_moe"


def select_path(state: State) -> Literal["retrieve", "compress", "route"]:
    """Pick the first stage of the mode's path."""
    if state.mode in ("optimized", "ensemble"):
        return "retrieve"
    return "compress" if state.mode == "fast" else "route"


def fan_out(state: State) -> Literal["swap_load"] | list[Send]:
    """After routing: one expert, or one `Send` per ensemble candidate (served in order)."""
    if state.mode != "ensemble":
        return "swap_load"
    return [
        Send(
            "expert_answer",
            ExpertTask(
                query=state.query,
                prompt=state.prompt,
                expert=name,
                order=i,
                ensemble_id=state.ensemble_id,
                route_score=state.route_scores.get(name, 0.0),
            ),
        )
        for i, name in enumerate(state.candidates)
    ]


def after_answer(state: State) -> Literal["learn", "__end__"]:
    """Only the optimized and ensemble paths learn from their answers."""
    return "learn" if state.mode in ("optimized", "ensemble") else END


def build_graph(*, checkpointer: object | None = None) -> CompiledStateGraph:
    """Build and compile the ECH0 MoE graph (named ``ech0_moe``)."""
    builder = StateGraph(State, context_schema=Context, input_schema=InputState, output_schema=OutputState)
    builder.add_node("prepare", prepare)
    builder.add_node("retrieve", retrieve)
    builder.add_node("compress", compress)
    builder.add_node("route", route)
    builder.add_node("swap_load", swap_load)
    builder.add_node("answer", answer)
    builder.add_node("expert_answer", expert_answer, input_schema=ExpertTask)
    builder.add_node("combine", combine_answers)
    builder.add_node("learn", learn)

    builder.add_edge(START, "prepare")
    builder.add_conditional_edges("prepare", select_path)
    builder.add_edge("retrieve", "compress")
    builder.add_edge("compress", "route")
    builder.add_conditional_edges("route", fan_out, ["swap_load", "expert_answer"])
    builder.add_edge("swap_load", "answer")
    builder.add_conditional_edges("answer", after_answer)
    builder.add_edge("expert_answer", "combine")
    builder.add_conditional_edges("combine", after_answer)
    builder.add_edge("learn", END)
    return builder.compile(checkpointer=checkpointer, name=GRAPH_NAME)  # type: ignore[arg-type]
