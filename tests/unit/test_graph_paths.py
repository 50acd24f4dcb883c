"""Every path of the graph on the fake backend: node order, state and swaps, in milliseconds."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import TypedDict

import pytest
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, StateGraph

from ech0_moe.errors import BackendError, InputError, KnowledgeBaseError
from ech0_moe.graph import Context, build_graph
from ech0_moe.services import Services

MATH = "Solve the equation 3x = 9"
BIO = "What does a heart cell need"

PATHS = {  # with prefetch, swap_load runs beside retrieve/compress; answer waits for both
    "optimized": [{"prepare"}, {"route"}, {"retrieve", "swap_load"}, {"compress"}, {"answer"}, {"learn"}],
    "fast": [{"prepare"}, {"route"}, {"compress", "swap_load"}, {"answer"}],
    "basic": [{"prepare"}, {"route"}, {"swap_load"}, {"answer"}],
}
SEQUENTIAL = {  # Context(prefetch=False): the design card's order
    "optimized": ["prepare", "route", "retrieve", "compress", "swap_load", "answer", "learn"],
    "fast": ["prepare", "route", "compress", "swap_load", "answer"],
    "basic": ["prepare", "route", "swap_load", "answer"],
}


def steps(graph, inputs: dict, context: Context) -> list[set[str]]:
    """The nodes of each superstep, in order."""
    out: list[set[str]] = []
    for _, chunk in graph.stream(inputs, context=context, stream_mode=["updates", "debug"]):
        if isinstance(chunk, dict) and chunk.get("type") == "task":
            if not out or chunk["step"] != out[-1][0]:
                out.append((chunk["step"], set()))
            out[-1][1].add(chunk["payload"]["name"])
    return [names for _, names in out]


@pytest.fixture
def ctx(tmp_path: Path) -> Context:
    return Context(experts_file=str(tmp_path / "experts.yaml"), kb_dir=str(tmp_path / "kb"))


@pytest.mark.parametrize("mode", ["optimized", "fast", "basic"])
def test_each_mode_runs_its_stages_in_order(services: Services, ctx: Context, fake, mode: str) -> None:
    graph = build_graph(services=services)
    assert steps(graph, {"query": MATH, "mode": mode}, ctx) == PATHS[mode]
    sequential = Context(experts_file=ctx.experts_file, kb_dir=ctx.kb_dir, prefetch=False)
    assert [n for s in steps(graph, {"query": MATH, "mode": mode}, sequential) for n in s] == SEQUENTIAL[mode]
    result = graph.invoke({"query": MATH, "mode": mode}, context=ctx)
    assert result["mode"] == mode and result["expert_used"] == "math"
    assert result["solution"] == "math: 9"  # the fake echoes the prompt's last word: the question's
    assert set(result["timings"]) == {n for s in PATHS[mode] for n in s} - {"prepare"}
    assert fake.loads == ["math"]  # one load for three runs on the same file


def test_optimized_learns_and_retrieves(services: Services, ctx: Context, kb) -> None:
    graph = build_graph(services=services)
    first = graph.invoke({"query": BIO}, context=ctx)
    assert first["mode"] == "optimized" and first["retrieved_contexts"] == []
    assert [e["source"] for e in kb.entries] == ["learned:biology"]
    second = graph.invoke({"query": BIO + " most"}, context=ctx)
    assert second["retrieved_contexts"][0]["kind"] == "learned"
    prompt = services.pool.runtime("llamacpp").prompts[-1][1]
    assert "an earlier answer by expert biology (memory of local; unverified)" in prompt
    assert prompt.startswith("<reference-data id=")
    assert "reference data" in services.pool.runtime("llamacpp").systems[-1]


def test_swaps_are_counted_and_reported(services: Services, ctx: Context, fake) -> None:
    graph = build_graph(services=services)
    runs = [graph.invoke({"query": q, "mode": "basic"}, context=ctx) for q in (MATH, BIO, BIO, MATH)]
    assert [r["expert_used"] for r in runs] == ["math", "biology", "biology", "math"]
    assert [r["swapped"] for r in runs] == [True, True, False, True]
    assert services.pool.swaps == 3 and fake.unloads == ["math", "biology"]
    assert services.pool.stats()["peak_loaded_bytes"] <= services.pool.budget


def test_forced_expert(services: Services, ctx: Context) -> None:
    result = build_graph(services=services).invoke({"query": MATH, "mode": "basic", "expert": "physics"}, context=ctx)
    assert result["expert_used"] == "physics" and "chosen by the caller" in result["route_reason"]
    with pytest.raises(InputError, match="unknown expert 'nobody'"):
        build_graph(services=services).invoke({"query": MATH, "expert": "nobody"}, context=ctx)


def test_ensemble_serves_resident_first_and_votes(services: Services, ctx: Context, fake) -> None:
    services.pool.ensure_loaded("biology")  # file b resident
    fake.loads.clear()
    fake.reply = lambda spec, prompt: "B) 42"  # every expert agrees: the third is never asked
    graph = build_graph(services=services)
    result = graph.invoke({"query": "Which force keeps an orbit, and what light", "mode": "ensemble"}, context=ctx)
    assert result["mode"] == "ensemble" and result["solution"] == "B) 42"
    asked = [name for name, _ in fake.prompts]
    assert len(asked) == 2  # majority after two of three
    b_experts = {"biology", "general"}
    order = sorted(result["route_scores"], key=lambda n: -result["route_scores"][n])[:3]
    resident = [n for n in order if n in b_experts]
    assert asked[0] in resident  # the resident file first
    assert services.pool.swaps == 1 + sum(1 for n in asked if n not in b_experts)


def test_ensemble_majority_stop_fires_on_paraphrased_agreement(services: Services, ctx: Context, fake) -> None:
    said = {}
    answers = iter(["Newton.", "It is the newton (N).", "Joule"])
    fake.reply = lambda spec, prompt: said.setdefault(spec.name, next(answers))
    query = "What is the SI unit of force? Name it."
    result = build_graph(services=services).invoke({"query": query, "mode": "ensemble"}, context=ctx)
    assert len(fake.prompts) == 2  # "Newton." and "It is the newton (N)." agree: the third is never asked
    assert result["solution"] in ("Newton.", "It is the newton (N).")
    keys = [r["vote_key"] for r in result["responses"] if not r["skipped"]]
    assert keys == ["newton", "newton"] and [r["skipped"] for r in result["responses"]].count(True) == 1


def test_ensemble_branch_failure_is_reported_and_others_vote(services: Services, ctx: Context, fake) -> None:
    fake.fail = [BackendError("model file vanished")]  # permanent: not retried
    result = build_graph(services=services).invoke({"query": MATH, "mode": "ensemble"}, context=ctx)
    assert result["solution"] and not result["error"]


def test_transient_failures_are_retried(services: Services, ctx: Context, fake, kb) -> None:
    fake.fail = [BackendError("connection dropped", transient=True)] * 2
    result = build_graph(services=services).invoke({"query": BIO}, context=ctx)
    assert result["error"] == "" and result["solution"].startswith("biology: ")
    assert len(fake.prompts) == 3 and len(kb.entries) == 1


def test_failure_after_retries_is_an_error_and_nothing_is_learned(services: Services, ctx: Context, fake, kb) -> None:
    fake.fail = [BackendError("connection dropped", transient=True)] * 3
    result = build_graph(services=services).invoke({"query": BIO}, context=ctx)
    assert result["error"] == "answer failed after 3 attempts: connection dropped" and result["solution"] == ""
    assert kb.entries == []


def test_permanent_failure_is_not_retried(services: Services, ctx: Context, fake) -> None:
    fake.fail = [BackendError("not a GGUF file")]
    result = build_graph(services=services).invoke({"query": BIO, "mode": "basic"}, context=ctx)
    assert result["error"] == "answer failed: not a GGUF file" and len(fake.prompts) == 1


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        ({"query": "   "}, "empty query"),
        ({"query": 42}, "query must be text"),
        ({"query": "hi", "mode": "turbo"}, "unknown mode 'turbo'"),
        ({"query": "hi", "mode": 3}, "unknown mode 3"),
    ],
)
def test_bad_input_is_one_input_error(services: Services, ctx: Context, inputs: dict, message: str) -> None:
    with pytest.raises(InputError, match=message) as info:
        build_graph(services=services).invoke(inputs, context=ctx)
    assert isinstance(info.value, ValueError) and "\n" not in str(info.value)


def test_reused_thread_starts_clean(services: Services, ctx: Context) -> None:
    graph = build_graph(services=services, checkpointer=InMemorySaver())
    config = {"configurable": {"thread_id": "t1"}}
    graph.invoke({"query": BIO, "mode": "optimized"}, config, context=ctx)
    second = graph.invoke({"query": BIO, "mode": "basic"}, config, context=ctx)
    assert second["mode"] == "basic" and second["retrieved_contexts"] == []
    assert set(second["timings"]) == {"route", "swap_load", "answer"}


class Outer(TypedDict, total=False):
    query: str
    solution: str
    expert_used: str
    report: str


def test_embeds_in_a_project_with_its_own_graph_and_nodes_modules(
    services: Services, ctx: Context, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = tmp_path / "user_project"
    project.mkdir()
    (project / "graph.py").write_text("OWNER = 'user'\n")
    (project / "nodes.py").write_text("OWNER = 'user'\n")
    # a fresh interpreter in that project: its own graph/nodes modules win, ours still import
    script = (
        "import graph, nodes; from ech0_moe.graph import build_graph; build_graph(); print(graph.OWNER, nodes.OWNER)"
    )
    proc = subprocess.run([sys.executable, "-c", script], cwd=project, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.split() == ["user", "user"], proc.stderr

    monkeypatch.syspath_prepend(str(project))
    for name in ("graph", "nodes"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    import graph as user_graph

    assert user_graph.OWNER == "user"

    def report(state: Outer) -> Outer:
        return {"report": f"{state['expert_used']}: {state['solution']}"}

    outer = StateGraph(Outer, context_schema=Context)
    outer.add_node("experts", build_graph(services=services))
    outer.add_node("report", report)
    outer.add_edge(START, "experts")
    outer.add_edge("experts", "report")
    outer.add_edge("report", END)
    result = outer.compile().invoke({"query": BIO}, context=ctx)
    assert result["report"].startswith("biology: ")


INTENDED_EDGES = {
    ("__start__", "prepare", False),
    ("prepare", "route", False),
    ("route", "retrieve", True),
    ("route", "compress", True),
    ("route", "swap_load", True),
    ("retrieve", "compress", False),
    ("compress", "answer", True),
    ("compress", "swap_load", True),
    ("compress", "expert_answer", True),
    ("swap_load", "answer", True),
    ("swap_load", "__end__", True),  # the prefetch branch ends once the model is resident
    ("answer", "learn", True),
    ("answer", "__end__", True),
    ("expert_answer", "combine", False),
    ("combine", "learn", True),
    ("combine", "__end__", True),
    ("learn", "__end__", False),
}


def test_studio_draws_exactly_the_intended_edges(services: Services) -> None:
    drawn = build_graph(services=services).get_graph()
    assert {(e.source, e.target, e.conditional) for e in drawn.edges} == INTENDED_EDGES


def test_context_values_are_checked() -> None:
    for bad, message in [
        ({"top_k": 0}, "top_k must be a whole number from 1"),
        ({"ensemble_k": -1}, "ensemble_k must be"),
        ({"vote_judge": "maybe"}, "unknown vote_judge .maybe.; use one of rules, expert"),
        ({"compression_target": 0.0}, "compression_target must be more than 0"),
        ({"compression_target": float("nan")}, "compression_target must be"),
        ({"max_distance": -1.0}, "max_distance must be from 0 to 2"),
        ({"mode": "turbo"}, "unknown mode"),
        ({"compression_method": "zip"}, "unknown compression_method"),
    ]:
        with pytest.raises(InputError, match=message):
            Context(**bad)


class BrokenKB:
    """A store that cannot be read or written (damaged files, a full disk)."""

    def search(self, *args: object, **kwargs: object) -> list:
        raise KnowledgeBaseError("knowledge base /kb: file is not a database")

    def learn(self, *args: object, **kwargs: object) -> str:
        raise KnowledgeBaseError("knowledge base /kb: attempt to write a readonly database")


def test_a_broken_knowledge_base_is_a_warning_and_the_answer_survives(services: Services, ctx: Context) -> None:
    result = build_graph(services=services.with_kb(BrokenKB())).invoke({"query": BIO}, context=ctx)  # type: ignore[arg-type]
    assert result["solution"].startswith("biology: ") and result["error"] == ""
    assert result["retrieved_contexts"] == []
    assert result["warnings"] == [
        "retrieve skipped: knowledge base /kb: file is not a database",
        "not learned: knowledge base /kb: attempt to write a readonly database",
    ]


def test_a_wrong_input_shape_is_an_input_error(services: Services, ctx: Context) -> None:
    graph = build_graph(services=services)
    with pytest.raises(InputError, match="empty query"):
        graph.invoke({}, context=ctx)
    with pytest.raises(InputError, match="expert must be an expert's name"):
        graph.invoke({"query": "hi", "expert": ["math"]}, context=ctx)


def test_vote_judge_asks_a_loaded_expert_and_never_loads_one(services: Services, ctx: Context, fake) -> None:
    """Universal self-consistency: three different open answers; the judge (an answering expert
    still resident) names Response 2, which wins over the rules' pick - with no extra load."""
    answers = {"math": "Canberra.", "physics": "Sydney.", "biology": "Melbourne.", "general": "Perth."}

    def reply(spec, prompt: str) -> str:
        if "most consistent response" in prompt:
            return "The most consistent response is Response 2."
        return answers[spec.name]

    fake.reply = reply
    query = "What is the capital of Australia?"
    judged = replace(ctx, vote_judge="expert")
    result = build_graph(services=services).invoke({"query": query, "mode": "ensemble"}, context=judged)
    listed = [r for r in sorted(result["responses"], key=lambda r: r["order"]) if r["solution"]]
    assert len(listed) == 3 and result["solution"] == listed[2]["solution"]
    assert result["judged_by"] in services.pool.loaded_experts()
    assert sum("most consistent response" in p for _, p in fake.prompts) == 1
    assert f"Response 0:\n{listed[0]['solution']}" in next(p for _, p in fake.prompts if "most consistent" in p)
    loads = len(fake.loads)
    fake.reply = lambda spec, prompt: "I cannot tell." if "most consistent" in prompt else reply(spec, prompt)
    again = build_graph(services=services).invoke({"query": query, "mode": "ensemble"}, context=judged)
    assert again["judged_by"] == "" and any("named no response" in w for w in again["warnings"]), again["warnings"]
    assert again["solution"] and len(fake.loads) - loads <= 3  # the judge itself loaded nothing
    plain = build_graph(services=services).invoke({"query": query, "mode": "ensemble"}, context=ctx)
    assert plain["judged_by"] == ""  # off by default
