"""Wire the nodes into the ECH0 MoE graph.

Every path starts with `prepare` (validation + reset) and `route` (on the raw
query, no model loaded). With prefetch (default) the routed expert loads in a
parallel branch while retrieve/compress run; that branch ends when the model is
resident, and compress triggers `answer` (supersteps are barriers, so the load is done):

    optimized: route -> [swap_load || retrieve -> compress] -> answer -> learn
    fast:      route -> [swap_load || compress]             -> answer
    basic:     route ->  swap_load                          -> answer
    ensemble:  route -> retrieve -> compress => expert_answer x k (Send, served one at a time)
               -> combine -> learn

With `Context(prefetch=False)` the stages run strictly one after another
(retrieve -> compress -> swap_load -> answer), the order of the design card.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any, Literal

from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph
from langgraph.runtime import Runtime
from langgraph.types import Checkpointer, Send

from ech0_moe.graph.context import Context
from ech0_moe.graph.state import ExpertTask, InputState, OutputState, State
from ech0_moe.nodes import answer, combine, compress, expert_answer, learn, prepare, retrieve, route, swap_load
from ech0_moe.nodes._common import context
from ech0_moe.nodes.answer import RETRY, answer_failed
from ech0_moe.nodes.expert_answer import expert_failed
from ech0_moe.services import ServiceProvider, process_registry

GRAPH_NAME = "ech0_moe"


def after_route(state: State, runtime: Runtime[Context]) -> list[Literal["swap_load", "retrieve", "compress"]]:
    """Pick the mode's next stages. With prefetch (the default) the expert loads in
    parallel with retrieve/compress; without it the stages run one after another."""
    first: list[Literal["swap_load", "retrieve", "compress"]] = []
    if state.mode in ("optimized", "ensemble"):
        first.append("retrieve")
    elif state.mode == "fast":
        first.append("compress")
    if state.mode != "ensemble" and (not first or context(runtime).prefetch):
        first.append("swap_load")
    return first


def after_compress(state: State, runtime: Runtime[Context]) -> Literal["answer", "swap_load"] | list[Send]:
    """One expert: answer (or load it now, without prefetch); ensemble: one `Send` per candidate."""
    if state.mode != "ensemble":
        return "answer" if context(runtime).prefetch else "swap_load"
    return [
        Send(
            "expert_answer",
            ExpertTask(
                query=state.query,
                prompt=state.prompt,
                expert=name,
                order=i,
                size=len(state.candidates),
                ensemble_id=state.ensemble_id,
                route_score=state.route_scores.get(name, 0.0),
                choices=state.choices,
            ),
        )
        for i, name in enumerate(state.candidates)
    ]


def after_swap_load(state: State, runtime: Runtime[Context]) -> Literal["answer", "__end__"]:
    """Basic mode and sequential runs answer next; with prefetch the load was a parallel
    branch that ends here, and compress (in the same or an earlier superstep) triggers answer."""
    return "answer" if state.mode == "basic" or not context(runtime).prefetch else END


def after_answer(state: State) -> Literal["learn", "__end__"]:
    """Only the optimized and ensemble paths learn from their answers."""
    return "learn" if state.mode in ("optimized", "ensemble") else END


def build_graph(
    *, services: ServiceProvider | None = None, checkpointer: Checkpointer = None
) -> CompiledStateGraph[State, Context, InputState, OutputState]:
    """Build and compile the ECH0 MoE graph (named ``ech0_moe``).

    `services`: a `Services` (your own pool, router, knowledge base - e.g. a fake backend
    in tests) used by every run, or a `ServiceRegistry` that builds them from each run's
    `Context`; default: the process's registry (one pool per experts file)."""
    provider = services if services is not None else process_registry()

    def bind(node: Callable[..., Any]) -> Callable[..., Any]:
        return partial(node, services=provider)

    builder = StateGraph(State, context_schema=Context, input_schema=InputState, output_schema=OutputState)
    builder.add_node("prepare", prepare)
    builder.add_node("retrieve", bind(retrieve))
    builder.add_node("compress", bind(compress))
    builder.add_node("route", bind(route))
    builder.add_node("swap_load", bind(swap_load), retry_policy=RETRY, error_handler=answer_failed)
    builder.add_node("answer", bind(answer), retry_policy=RETRY, error_handler=answer_failed)
    builder.add_node(
        "expert_answer", bind(expert_answer), input_schema=ExpertTask, retry_policy=RETRY, error_handler=expert_failed
    )
    builder.add_node("combine", bind(combine))
    builder.add_node("learn", bind(learn))

    builder.add_edge(START, "prepare")
    builder.add_edge("prepare", "route")
    builder.add_conditional_edges("route", after_route, ["swap_load", "retrieve", "compress"])
    builder.add_edge("retrieve", "compress")
    builder.add_conditional_edges("compress", after_compress, ["answer", "swap_load", "expert_answer"])
    builder.add_conditional_edges("swap_load", after_swap_load, ["answer", END])
    builder.add_conditional_edges("answer", after_answer, ["learn", END])
    builder.add_edge("expert_answer", "combine")
    builder.add_conditional_edges("combine", after_answer, ["learn", END])
    builder.add_edge("learn", END)
    return builder.compile(checkpointer=checkpointer, name=GRAPH_NAME)
