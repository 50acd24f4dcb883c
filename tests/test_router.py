"""Router: decisions, fitting, benchmark output (real offline MiniLM; no expert model loaded)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from ech0_moe.bench import bench_routing, load_jsonl, split_dev
from ech0_moe.config import load_config
from ech0_moe.errors import Ech0Error
from ech0_moe.router import LinearModel, Router, decide, fit_model, question_id
from tests.conftest import ROOT

# Our own questions (not from any benchmark), one per line: (question, domain).
OWN = [
    ("What is the integral of 1/x?", "mathematics"),
    ("How many ways can 3 people sit in a row of 3 chairs?", "mathematics"),
    ("Why does a heavier pendulum bob not change the period?", "physics"),
    ("What is the pH of pure water at 25 C?", "chemistry"),
    ("Which organ filters blood to make urine?", "biology"),
    ("What is the average time complexity of inserting into a hash table?", "computer_science"),
    ("What is the equivalent resistance of two 10 ohm resistors in series?", "engineering"),
    ("Which fallacy attacks the person making the argument?", "reasoning"),
    ("Who was the first president of the United States?", "general"),
]


@pytest.fixture(scope="module")
def config():
    return load_config(ROOT / "experts.yaml")


@pytest.fixture(scope="module")
def router(config):
    return Router(config)


def test_routes_clear_questions(router: Router) -> None:
    for question, domain in OWN:
        d = router.route(question)
        assert d.domain == domain, (question, d.as_dict())
        assert 0 < d.confidence <= 1 and d.seconds < 1
        assert abs(sum(d.scores.values()) - 1) < 1e-3


def test_top_k_is_ranked(router: Router) -> None:
    d = router.route("What is the de Broglie wavelength of an electron?", top_k=3)
    assert len(d.ranked) == 3 and d.ranked[0] == "physics"
    assert d.scores[d.ranked[1]] >= d.scores[d.ranked[2]]


def test_decide_falls_back_and_stays() -> None:
    scores = {"math": 0.28, "physics": 0.27, "general": 0.2, "logic": 0.25}
    assert decide(scores, general="general", min_confidence=0.3)[0] == "general"
    assert decide(scores, general="general", min_confidence=0.1)[0] == "math"
    expert, reason, stayed = decide(scores, general="general", min_confidence=0.1, loaded=["logic"], stay_margin=0.05)
    assert (expert, stayed) == ("logic", True) and "stayed on loaded 'logic'" in reason
    assert decide(scores, general="general", min_confidence=0.1, loaded=["general"], stay_margin=0.05)[0] == "math"


def test_stay_on_loaded_expert_is_reported(router: Router) -> None:
    d = router.route("What is the integral of 1/x?", loaded=["general"], stay_margin=1.0)
    assert d.expert == "general" and d.best == "math" and d.stayed
    assert router.route("What is the integral of 1/x?", loaded=["general"], stay_margin=0.0).expert == "math"


def test_fit_save_load_and_bench_skips_fitted_questions(config, tmp_path: Path) -> None:
    data = tmp_path / "dev.jsonl"
    data.write_text("\n".join(json.dumps({"question": q, "domain": d}) for q, d in OWN * 2) + "\n")
    rows = load_jsonl(data, ("question", "domain"))
    fit_rows, held = split_dev(rows[: len(OWN)], 0.5, seed=1)
    model = fit_model(config, [(r["question"], r["domain"]) for r in fit_rows])
    model.save(tmp_path / "router.npz")
    loaded = LinearModel.load(tmp_path / "router.npz")
    assert loaded.classes == model.classes and loaded.trained_ids == {question_id(r["question"]) for r in fit_rows}
    result = bench_routing(config, rows, router=Router(config, model=loaded))
    assert result["skipped_seen_in_fit"] == 2 * len(fit_rows)
    assert result["n"] == 2 * len(held)
    for key in ("macro_accuracy", "micro_accuracy", "per_domain", "median_ms", "keyword_baseline", "swap_tradeoff"):
        assert key in result
    assert set(result["keyword_baseline"]) >= {"macro_accuracy", "micro_accuracy", "per_domain", "median_ms"}
    margins = result["swap_tradeoff"]
    assert margins[0]["stay_margin"] == 0 and margins[-1]["swaps"] <= margins[0]["swaps"]


def test_router_settings_are_validated(write_config, config) -> None:
    body = (
        (ROOT / "experts.yaml")
        .read_text()
        .replace("memory_budget: 150MB", "memory_budget: 150MB\nrouter: {min_confidence: 2}")
    )
    body = body.replace("models/", str(ROOT / "models") + "/")
    with pytest.raises(Ech0Error, match="between 0 and 1"):
        load_config(write_config(body))
    assert replace(config.router, stay_margin=0.2).stay_margin == 0.2


def test_bad_data_file_is_one_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "x", "domain": "general"}\n{oops\n')
    with pytest.raises(Ech0Error, match=r"bad.jsonl:2: not JSON"):
        load_jsonl(bad, ("question", "domain"))
    bad.write_text('{"question": "x"}\n')
    with pytest.raises(Ech0Error, match="missing field 'domain'"):
        load_jsonl(bad, ("question", "domain"))


def test_keyword_fallback_routes_without_the_embedder(config) -> None:
    router = Router(config, keyword_only=True)
    d = router.route("Balance the reaction and name the acid and the base in this solution.")
    assert d.expert == "chemistry" and d.method == "keyword"
    assert router.route("Tell me something nice.").expert == "general"  # no keyword: general expert
