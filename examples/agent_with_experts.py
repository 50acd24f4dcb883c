"""A larger agent that embeds ECH0 MoE as a subgraph node, with durable SQLite checkpoints.

    plan -> experts (the ECH0 MoE graph) -> review -> report

The run pauses before `review` (a human checks the expert's answer) and resumes
later - from another process too - by thread id:

    python examples/agent_with_experts.py --db agent.sqlite --thread t1 "What is Ohm's law?"
    python examples/agent_with_experts.py --db agent.sqlite --thread t1 --resume
"""

from __future__ import annotations

import argparse
import json
import sqlite3
from typing import TypedDict

from langgraph.checkpoint.sqlite import SqliteSaver
from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph

from ech0_moe.graph import Context, build_graph


class AgentState(TypedDict, total=False):
    request: str
    query: str  # shared with the ECH0 MoE subgraph's input
    mode: str
    solution: str  # shared with the subgraph's output
    expert_used: str
    swapped: bool
    approved: bool
    report: str


def plan(state: AgentState) -> AgentState:
    """Turn the user's request into one question for the experts."""
    return {"query": state["request"].strip().rstrip("?") + "?", "mode": state.get("mode") or "fast"}


def review(state: AgentState) -> AgentState:
    """A human (or another model) signs the answer off; here: non-empty is approved."""
    return {"approved": bool(state.get("solution", "").strip())}


def report(state: AgentState) -> AgentState:
    status = "approved" if state.get("approved") else "rejected"
    return {"report": f"[{status}] {state['expert_used']} answered: {' '.join(state['solution'].split())}"}


def build_agent(checkpointer: object | None = None, pause_for_review: bool = False) -> CompiledStateGraph:
    builder = StateGraph(AgentState, context_schema=Context)
    builder.add_node("plan", plan)
    builder.add_node("experts", build_graph())  # ECH0 MoE as a subgraph node
    builder.add_node("review", review)
    builder.add_node("report", report)
    builder.add_edge(START, "plan")
    builder.add_edge("plan", "experts")
    builder.add_edge("experts", "review")
    builder.add_edge("review", "report")
    builder.add_edge("report", END)
    return builder.compile(
        checkpointer=checkpointer,  # type: ignore[arg-type]
        interrupt_before=["review"] if pause_for_review else None,
        name="agent_with_experts",
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("request", nargs="?")
    parser.add_argument("--db", default="agent.sqlite")
    parser.add_argument("--thread", default="default")
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--kb", default=None)
    parser.add_argument("--max-tokens", type=int, default=32)
    args = parser.parse_args()
    context = Context(max_tokens=args.max_tokens, **({"kb_dir": args.kb} if args.kb else {}))
    with sqlite3.connect(args.db, check_same_thread=False) as conn:
        agent = build_agent(SqliteSaver(conn), pause_for_review=True)
        config = {"configurable": {"thread_id": args.thread}}
        if args.resume:
            if not agent.get_state(config).next:  # nothing paused on this thread: nothing to resume
                parser.exit(2, f"agent: error: thread {args.thread!r} in {args.db} has no paused run to resume\n")
            result = agent.invoke(None, config, context=context)
        else:
            if not args.request:
                parser.error("give a request, or --resume a thread")
            result = agent.invoke({"request": args.request}, config, context=context)
        pending = agent.get_state(config).next
    print(
        json.dumps(
            {"paused_before": list(pending), "report": result.get("report"), "expert": result.get("expert_used")}
        )
    )


if __name__ == "__main__":
    main()
