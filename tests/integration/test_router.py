"""Router: decisions, fitting, benchmark output (real offline MiniLM; no expert model loaded)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from ech0_moe.bench.peers import SEMANTIC_ROUTER
from ech0_moe.bench.routing import bench_routing
from ech0_moe.config import load_config
from ech0_moe.datasets import load_jsonl
from ech0_moe.errors import Ech0Error
from ech0_moe.routing.fit import fit_model
from ech0_moe.routing.model import RouterModel, question_id
from ech0_moe.routing.router import Router

ROOT = Path(__file__).resolve().parents[2]

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


def test_stay_on_loaded_expert_is_reported(router: Router) -> None:
    d = router.route("What is the integral of 1/x?", loaded=["general"], stay_margin=1.0)
    assert d.expert == "general" and d.best == "math" and d.stayed
    assert router.route("What is the integral of 1/x?", loaded=["general"], stay_margin=0.0).expert == "math"


def test_fit_save_load_round_trip(config, tmp_path: Path) -> None:
    by_domain = {e.domain: e.name for e in config.experts}
    model = fit_model(config, [(q, by_domain[d]) for q, d in OWN[:4]])
    model.save(tmp_path / "router.npz")
    loaded = RouterModel.load(tmp_path / "router.npz")
    assert loaded.classes == model.classes and loaded.trained_ids == {question_id(q) for q, _ in OWN[:4]}
    assert len(loaded.memory) == len(model.memory) and (loaded.k, loaded.mix) == (model.k, model.mix)
    assert (loaded.sharpness, loaded.pool_hash) == (model.sharpness, model.pool_hash) and model.pool_hash
    x = model.memory[:3]
    assert np.allclose(loaded.proba(x), model.proba(x), atol=1e-3)


def test_router_settings_are_validated(write_config, config) -> None:
    body = (
        (ROOT / "experts.yaml")
        .read_text()
        .replace("memory_budget: 200MB", "memory_budget: 200MB\nrouter: {min_confidence: 2}")
    )
    with pytest.raises(Ech0Error, match=r"router.min_confidence: expected a number from 0 to 1, got 2"):
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


def test_routing_features_are_mean_and_max_halves() -> None:
    from ech0_moe.embeddings import embed, route_features

    x = route_features(["What is the enthalpy of formation of water?", "Hi"])
    assert x.shape == (2, 768) and np.allclose(np.linalg.norm(x, axis=1), 1, atol=1e-4)
    halves = x.reshape(2, 2, 384) * np.sqrt(2)
    assert np.allclose(np.linalg.norm(halves, axis=2), 1, atol=1e-4)  # each half unit length
    # the int8 encoder's mean half stays close to the float32 document embedding
    assert float(halves[0, 0] @ embed(["What is the enthalpy of formation of water?"])[0]) > 0.97


def test_model_fitted_on_other_features_is_one_error(config, tmp_path: Path) -> None:
    n = len(config.names)
    RouterModel(config.names, np.zeros((n, 384)), np.zeros(n)).save(tmp_path / "old.npz")
    cfg = replace(config, router=replace(config.router, model=str(tmp_path / "old.npz")))
    with pytest.raises(Ech0Error, match=r"fitted on 384 features, the router makes 768: refit it"):
        Router(cfg)
    RouterModel(["general", "mathematics"], np.zeros((2, 768)), np.zeros(2)).save(tmp_path / "other.npz")
    cfg = replace(config, router=replace(config.router, model=str(tmp_path / "other.npz")))
    with pytest.raises(Ech0Error, match=r"fitted for experts general, mathematics, not this pool's math, physics"):
        Router(cfg)


def test_damaged_encoder_file_is_one_error(tmp_path: Path) -> None:
    from ech0_moe.embeddings import Embedder, onnx_paths

    broken = tmp_path / "broken.onnx"
    broken.write_bytes(onnx_paths()[1].read_bytes()[:1000])
    with pytest.raises(Ech0Error, match=r"broken.onnx is unreadable .*delete it and run `make install`"):
        Embedder(broken)


def test_bench_scores_few_shot_and_cross_validated(config, tmp_path: Path) -> None:
    data = tmp_path / "own.jsonl"
    data.write_text("\n".join(json.dumps({"question": q, "domain": d}) for q, d in OWN * 2) + "\n")
    result = bench_routing(config, load_jsonl(data, ("question",)), folds=2)
    assert result["n"] == 2 * len(OWN) and result["experts"] == 8
    assert set(result["taught_documents"]) == {"chunks", "20", "100", "500"}
    for setting in ("pool_only", "pool_and_written", "with_data"):
        for method in ("router", "logistic_regression", "nearest_neighbours_5", SEMANTIC_ROUTER):
            figures = result[setting][method]
            assert {"macro_accuracy", "micro_accuracy", "per_expert", "calibration_error"} <= set(figures)
            assert set(figures["per_expert"]) == set(config.names)
    assert result["pool_and_written"]["router"]["macro_accuracy"] >= 0.8  # our own clear questions
    margins = result["swap_tradeoff"]
    assert margins[0]["stay_margin"] == 0 and margins[-1]["swaps"] <= margins[0]["swaps"]
    with pytest.raises(Ech0Error, match="too few"):
        bench_routing(config, load_jsonl(data, ("question",))[:3])


LAW = """\
  - name: law
    domain: law
    model: cache:smollm2-135m-instruct-b.gguf
    system_prompt: You are a lawyer. Name the legal rule, apply it to the facts and give the likely outcome.
    description: Law - contracts, torts, property, criminal law, evidence, constitutional law and civil procedure.
    examples:
      - A tenant stopped paying rent after the landlord refused to fix the heating. Can the landlord evict her?
      - Is a verbal agreement to sell land enforceable?
      - What must the prosecution prove to convict someone of burglary?
      - Can a police officer search a car without a warrant after a traffic stop?
"""
LAW_PARAPHRASES = [  # our own wording, none of them an example above
    "My landlord won't repair the heater, so I withheld rent. Is he allowed to evict me?",
    "Does an oral promise to sell a house hold up in court?",
    "What elements does the state need to establish for a burglary conviction?",
    "After pulling me over for speeding, may the officer look through my car without a warrant?",
    "A neighbour's tree fell on my garage during a storm. Who is liable for the damage?",
    "Can my employer fire me for posting about politics on my own time?",
    "If I sign a contract while drunk, can I get out of it later?",
]


def test_a_new_specialist_wins_its_own_topic_over_the_general_expert(tmp_path: Path) -> None:
    """The shipped general expert lists law and a legal case among its examples; a `law` expert
    added by hand still gets its examples, 6 of 7 paraphrases and general's own legal case."""
    pool = tmp_path / "experts.yaml"
    pool.write_text((ROOT / "experts.yaml").read_text().rstrip() + "\n" + LAW)
    config = load_config(pool)
    config = replace(config, router=replace(config.router, model=""))
    router = Router(config, model=fit_model(config))
    law = config.expert("law")
    assert [router.route(q).expert for q in law.examples] == ["law"] * len(law.examples)
    assert sum(router.route(q).expert == "law" for q in LAW_PARAPHRASES) >= 6
    termites = next(q for q in config.expert("general").examples if "termites" in q)
    assert router.route(termites).expert == "law"


def test_a_pool_of_a_new_kind_routes_its_own_questions_and_general_is_the_fallback() -> None:
    """examples/pool-everyday.yaml: cooking, gardening, travel, law, tax, medicine and a general
    expert whose description also lists legal matters, money and health. Written examples exist
    only for law and medicine; on our 84 held-out questions the specialists keep their topics."""
    config = load_config(ROOT / "examples" / "pool-everyday.yaml")
    router = Router(config, model=fit_model(config))
    rows = load_jsonl(ROOT / "benchmarks" / "everyday-routing.jsonl", ("question", "expert"))
    routed = {r["question"]: router.route(r["question"]).expert for r in rows}
    for expert in ("law", "tax", "medicine"):
        mine = [r["question"] for r in rows if r["expert"] == expert]
        assert sum(routed[q] == expert for q in mine) >= len(mine) - 1, [(q, routed[q]) for q in mine]
    assert sum(routed[r["question"]] == r["expert"] for r in rows) >= 0.9 * len(rows)
    assert router.floor == 0.0  # few-shot: no abstention floor (it lowered macro accuracy)


def test_documents_added_with_a_domain_and_feedback_teach_the_router(tmp_path: Path) -> None:
    """`kb add --domain medicine` keeps chunks as routing examples of the medicine expert, on the
    real store and encoders; the next router made for that folder is refitted on them, and
    `ech0-moe feedback` adds a question for the expert it names."""
    from ech0_moe.memory.kb import KnowledgeBase
    from ech0_moe.routing import taught
    from ech0_moe.routing.router import taught_router
    from ech0_moe.routing.rows import taught_rows

    config = load_config(ROOT / "examples" / "pool-everyday.yaml")
    kb_dir = tmp_path / "kb"
    assert taught_router(config, kb_dir) is None  # nothing taught: the pool's own router
    doc = tmp_path / "statins.md"
    doc.write_text(
        "# Statins\n\nStatins lower LDL cholesterol by blocking HMG-CoA reductase in the liver. "
        "Muscle aches are the most common side effect; grapefruit juice raises blood levels of some statins.\n\n"
        "# Monitoring\n\nLiver enzymes and a lipid panel are checked a few weeks after starting the drug.\n"
    )
    report = KnowledgeBase(kb_dir).add_paths([doc], domain="medicine", progress=False)
    assert report["routing_examples"] == report["chunks"] >= 1
    question = "Why would a doctor check my lipid panel after I start on a cholesterol drug?"
    before = Router(config).route(question)
    router = taught_router(config, kb_dir)
    assert router is not None
    after = router.route(question)
    assert after.expert == "medicine" and after.scores["medicine"] >= before.scores["medicine"]
    taught.add_feedback(kb_dir, config, "Can I bring my sourdough starter on a plane?", "travel")
    pairs = taught_rows(config, taught.read(kb_dir))
    assert pairs[-1] == ("Can I bring my sourdough starter on a plane?", "travel")
    KnowledgeBase(kb_dir).forget(source=str(doc))
    assert taught_rows(config, taught.read(kb_dir)) == [pairs[-1]]  # the document's examples went with it
