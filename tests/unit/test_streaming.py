"""LangGraph-native answers on the fake backend: token streaming, progress events, honest results."""

from __future__ import annotations

from pathlib import Path

import pytest

from ech0_moe.graph import Context, build_graph
from ech0_moe.services import Services

BIO = "What does a heart cell need"


@pytest.fixture
def ctx(tmp_path: Path) -> Context:
    return Context(experts_file=str(tmp_path / "experts.yaml"), kb_dir=str(tmp_path / "kb"))


def test_tokens_stream_with_the_node_that_produced_them(services: Services, ctx: Context, fake) -> None:
    fake.reply = lambda spec, prompt: "cells need oxygen and glucose"
    chunks = [
        (chunk.content, meta["langgraph_node"])
        for chunk, meta in build_graph(services=services).stream(
            {"query": BIO, "mode": "fast"}, context=ctx, stream_mode="messages"
        )
    ]
    assert len(chunks) >= 5 and {node for _, node in chunks} == {"answer"}
    assert "".join(text for text, _ in chunks) == "cells need oxygen and glucose"


def test_ensemble_branches_stream_as_expert_answer(services: Services, ctx: Context) -> None:
    stream = build_graph(services=services).stream(
        {"query": BIO, "mode": "ensemble"}, context=ctx, stream_mode="messages"
    )
    assert {meta["langgraph_node"] for _, meta in stream} == {"expert_answer"}


def test_progress_events(services: Services, ctx: Context) -> None:
    events = list(build_graph(services=services).stream({"query": BIO}, context=ctx, stream_mode="custom"))
    names = [e["event"] for e in events]  # retrieve and the load run in parallel
    assert names[0] == "routed" and names[-1] == "compressed"
    assert sorted(names) == ["compressed", "loaded", "loading", "retrieved", "routed"]
    by_name = {e["event"]: e for e in events}
    assert by_name["routed"]["expert"] == "biology" and "reason" in by_name["routed"]
    assert by_name["loading"]["bytes"] == 60_000_000 and by_name["loaded"]["swapped"] is True
    assert by_name["retrieved"]["count"] == 0
    assert by_name["compressed"]["requested"] == 0.5 and 0 < by_name["compressed"]["achieved"] <= 1


def test_results_say_what_happened(services: Services, ctx: Context) -> None:
    result = build_graph(services=services).invoke({"query": BIO, "mode": "basic"}, context=ctx)
    assert result["truncated"] is False
    assert result["tokens"] == {
        "prompt_before_compression": 6,
        "prompt_after_compression": 6,
        "prompt": 6,
        "completion": 2,
    }


def test_a_truncated_answer_is_reported_and_never_learned(services: Services, ctx: Context, fake, kb) -> None:
    fake.reply = lambda spec, prompt: "word " * 200
    result = build_graph(services=services).invoke({"query": BIO}, context=Context(max_tokens=8, **_paths(ctx)))
    assert result["truncated"] is True and result["tokens"]["completion"] == 8
    assert kb.entries == []


def test_an_empty_answer_is_never_learned(services: Services, ctx: Context, fake, kb) -> None:
    fake.reply = lambda spec, prompt: "   "
    build_graph(services=services).invoke({"query": BIO}, context=ctx)
    assert kb.entries == []


def test_ensemble_reports_every_response_and_the_votes(services: Services, ctx: Context, fake) -> None:
    answers = iter(["42", "41", "It is 42."])  # an open question: the vote reads the final answers
    fake.reply = lambda spec, prompt: next(answers)
    result = build_graph(services=services).invoke(
        {"query": "Which force keeps an orbit", "mode": "ensemble"}, context=ctx
    )
    responses = result["responses"]
    assert [r["order"] for r in responses] == [0, 1, 2]
    assert [r["vote_key"] for r in responses] == ["42", "41", "42"]
    assert set(result["votes"]) == {"42", "41"} and "42" in result["solution"]
    assert all({"expert", "route_score", "skipped", "error", "truncated"} <= set(r) for r in responses)


def _paths(ctx: Context) -> dict[str, str]:
    return {"experts_file": ctx.experts_file, "kb_dir": ctx.kb_dir}


def test_an_answer_past_its_timeout_is_an_error_and_not_learned(services: Services, ctx: Context, fake, kb) -> None:
    slow = Context(answer_timeout=1e-9, **_paths(ctx))  # already over by the first token
    result = build_graph(services=services).invoke({"query": BIO}, context=slow)
    assert result["error"] == "answer failed: the answer took longer than answer_timeout (1e-09 s)"
    assert result["solution"] == "" and kb.entries == [] and len(fake.prompts) == 1  # not retried


def test_a_slow_load_sends_heartbeats_from_its_own_thread(
    services: Services, ctx: Context, fake, monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib
    import threading
    import time

    monkeypatch.setattr(importlib.import_module("ech0_moe.nodes.swap_load"), "HEARTBEAT_S", 0.05)
    load = fake.load
    monkeypatch.setattr(fake, "load", lambda spec: (time.sleep(0.3), load(spec))[1])
    failures: list[BaseException] = []
    monkeypatch.setattr(threading, "excepthook", lambda args: failures.append(args.exc_value))
    events = [
        e
        for e in build_graph(services=services).stream(
            {"query": BIO, "mode": "basic"}, context=ctx, stream_mode="custom"
        )
        if e.get("event") == "loading"
    ]
    assert not failures and len(events) >= 3 and events[-1]["elapsed"] > 0


def test_a_leading_answer_label_is_dropped() -> None:
    from langchain_core.messages import AIMessage

    from ech0_moe.serving.runtimes.chat_models import STOP, reply_of

    assert reply_of(AIMessage("A: Paris is the capital.")).text == "Paris is the capital."
    assert reply_of(AIMessage("Answer:  42")).text == "42" and reply_of(AIMessage("AI is...")).text == "AI is..."
    assert "\nQuestion:" in STOP and "\nQ:" in STOP
