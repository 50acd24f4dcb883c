"""`bench modes` / `ech0_moe.benchmark` on the real model: a handful of our own questions, so CI stays fast."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

import ech0_moe
from ech0_moe.bench.modes import questions_of
from ech0_moe.errors import InputError
from ech0_moe.graph import Context, build_graph
from ech0_moe.memory.kb import KnowledgeBase
from ech0_moe.services import ServiceRegistry

ROOT = Path(__file__).resolve().parents[2]
QUESTIONS = [
    {"question": "What is 9 plus 10?", "choices": ["18", "19", "20", "21"], "answer": "B", "domain": "mathematics"},
    {
        "question": "What carries oxygen in the blood?",
        "choices": ["Platelets", "Plasma", "Red blood cells"],
        "answer": 2,
        "domain": "biology",
    },
    {
        "question": "What is the unit of electrical resistance?",
        "choices": ["Ohm", "Volt", "Ampere", "Watt"],
        "answer": "Ohm",
        "domain": "physics",
    },
    {"question": "Name a primary colour of light.", "answer": "zebra-42-never-said", "domain": "general"},
]


def test_real_model_picks_an_option_by_log_probability(context: Context) -> None:
    svc = ServiceRegistry().for_run(context.experts_file, context.kb_dir)
    out = build_graph(services=svc).invoke(
        {"query": QUESTIONS[0]["question"], "choices": QUESTIONS[0]["choices"], "mode": "basic"}, context=context
    )
    assert out["choice_method"] == "loglik" and 0 <= out["choice"] < 4 and len(out["choice_scores"]) == 4
    assert all(s < 0 for s in out["choice_scores"]) and sum(math.exp(s) for s in out["choice_scores"]) <= 1.0
    assert out["solution"] == f"{'ABCD'[out['choice']]}. {QUESTIONS[0]['choices'][out['choice']]}"
    assert out["tokens"]["completion"] == 0  # one forward pass, nothing generated


def test_benchmark_compares_modes_pools_and_a_learning_pass(context: Context, tmp_path: Path) -> None:
    svc = ServiceRegistry().for_run(context.experts_file, context.kb_dir)
    plot = tmp_path / "modes.png"
    report = ech0_moe.benchmark(
        QUESTIONS,
        context=context,
        services=svc,
        baseline="single",
        oracle=True,
        plot=plot,
        progress=False,
        kb_root=tmp_path / "kbs",
    )
    assert set(report["modes"]) == {"basic", "fast", "optimized", "ensemble"} and report["chance_accuracy"] > 0
    for run in [*report["modes"].values(), report["single"], report["oracle"]]:
        assert run["questions"] == 4 and run["errors"] == 0 and 0 <= run["accuracy"] <= 1
        assert run["p95_seconds"] >= run["p50_seconds"] > 0 and run["loads"] >= 1
        assert run["choice_method"] == {"loglik": 3}  # the open question is generated, not picked
    assert report["single"]["expert"] == "general" and report["single"]["loads"] == 1
    assert report["modes"]["optimized"]["prompt_tokens_before_compression"] > 0
    assert set(report["by_domain"]["physics"]) == {"routed", "single", "oracle"}
    learning = report["learning"]
    assert learning["second_pass"]["retrieved_learned"] >= learning["first_pass"]["retrieved_learned"]
    assert plot.stat().st_size > 10_000
    # the answer key never enters a knowledge base: the learned entries hold the experts' answers only
    learned = KnowledgeBase(tmp_path / "kbs" / "optimized")
    assert learned.stats()["entries"] == learning["knowledge_base_entries"] >= 1
    assert not any("zebra-42" in p.text for p in learned.search("Name a primary colour of light.", k=8))


def test_bad_rows_are_one_line_naming_the_row() -> None:
    with pytest.raises(InputError, match=r"data.jsonl: row 2: 'answer' must be an option's index, letter or text"):
        questions_of([QUESTIONS[0], {"question": "Q?", "choices": ["a", "b"], "answer": "E"}], "data.jsonl")
    with pytest.raises(InputError, match="row 1: needs 'choices' \\+ 'answer', or a reference 'answer' text"):
        questions_of([{"question": "Q?"}])


def test_cli_on_the_shared_exam_questions(routing_data: Path, run_cli, tmp_path: Path) -> None:
    proc = run_cli(
        "bench",
        "modes",
        "--data",
        str(routing_data),
        "--limit",
        "3",
        "--modes",
        "basic",
        "--no-learning",
        "--json",
        kb=tmp_path / "kb",
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout.splitlines()[-1])
    assert report["questions"] == 3 and report["modes"]["basic"]["choice_method"] == {"loglik": 3}
    assert "bench modes" in proc.stderr  # the progress bar
