"""Router decisions and the fitted model's arithmetic (no embedder, no model)."""

from __future__ import annotations

import numpy as np
import pytest

from ech0_moe.bench.common import calibration_error
from ech0_moe.datasets import fold_of
from ech0_moe.errors import ConfigError
from ech0_moe.routing.model import RouterModel
from ech0_moe.routing.router import decide


def test_decide_falls_back_and_stays() -> None:
    scores = {"math": 0.28, "physics": 0.27, "general": 0.2, "logic": 0.25}
    assert decide(scores, general="general", min_confidence=0.3)[0] == "general"
    assert decide(scores, general="general", min_confidence=0.1)[0] == "math"
    expert, reason, stayed = decide(scores, general="general", min_confidence=0.1, loaded=["logic"], stay_margin=0.05)
    assert (expert, stayed) == ("logic", True) and "stayed on loaded 'logic'" in reason
    assert decide(scores, general="general", min_confidence=0.1, loaded=["general"], stay_margin=0.05)[0] == "math"


def test_stay_margin_grows_with_the_load_it_saves() -> None:
    scores = {"math": 0.5, "logic": 0.3, "general": 0.2}
    rule = dict(general="general", min_confidence=0.1, loaded=["logic"], stay_margin=0.1)
    assert decide(scores, **rule)[0] == "math"  # 0.2 apart: more than the margin
    # a load of ~8 s at 0.02 per second adds 0.16: staying gives up 0.2 <= 0.26 to save it
    expert, reason, stayed = decide(scores, **rule, stay_per_second=0.02, load_seconds=lambda name: 8.0)
    assert (expert, stayed) == ("logic", True) and "saves a ~8.0 s load" in reason
    assert decide(scores, **rule, stay_per_second=0.02, load_seconds=lambda name: 2.0)[0] == "math"


def test_memory_vote_is_balanced_by_class_share() -> None:
    """Ten `general` neighbours must not outvote one much closer `engineering` one."""
    e1, e2 = np.eye(2, dtype=np.float32)
    general = [np.array([0.8, 0.6], np.float32)] * 10
    memory = np.vstack([e1[None, :], *general])
    model = RouterModel(["engineering", "general"], np.zeros((2, 2)), np.zeros(2), (), memory, np.array([0] + [1] * 10))
    model.mix = 1.0
    p = model.proba(e1[None, :])[0]
    assert p[0] > p[1] and abs(p.sum() - 1) < 1e-6
    assert model.proba(e2[None, :])[0][1] > 0.5  # far from the engineering example


def test_a_class_without_rows_is_never_chosen() -> None:
    x = np.eye(3, dtype=np.float32)[:2]
    model = RouterModel.fit(np.vstack([x] * 3), ["a", "b"] * 3, classes=["a", "b", "c"])
    p = model.proba(x)
    assert model.classes == ["a", "b", "c"] and p[:, 2].max() < 1e-6 and list(p.argmax(1)) == [0, 1]


def test_sharpness_calibrates_without_changing_the_ranking() -> None:
    x = np.eye(2, dtype=np.float32)
    model = RouterModel.fit(np.vstack([x] * 3), ["a", "b"] * 3)
    soft = model.proba(x)
    model.sharpness = 2.0
    sharp = model.proba(x)
    assert (sharp.argmax(1) == soft.argmax(1)).all() and sharp.max() > soft.max()
    assert np.allclose(sharp.sum(1), 1)


def test_calibration_error() -> None:
    assert calibration_error([0.9] * 10, [True] * 9 + [False]) == 0.0
    assert calibration_error([0.5] * 4, [True] * 4) == 0.5


def test_folds_are_stratified() -> None:
    fold = fold_of(["a"] * 10 + ["b"] * 5, 5)
    assert sorted(fold[:10]) == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4] and sorted(fold[10:]) == [0, 1, 2, 3, 4]


def test_topmean_vote_scores_each_class_by_its_closest_examples() -> None:
    """Few-shot memory: a class scores the mean similarity of its k closest examples, so one
    class's many middling examples do not outweigh another's close ones."""
    e1, e2 = np.eye(2, dtype=np.float32)
    memory = np.vstack([e1, e1, *[np.array([0.6, 0.8], np.float32)] * 8])
    model = RouterModel(["a", "b"], np.zeros((2, 2)), np.zeros(2), (), memory, np.array([0, 0] + [1] * 8))
    model.mix, model.vote, model.k, model.temperature = 1.0, "topmean", 5, 0.05
    assert model.proba(e1[None, :])[0].argmax() == 0 and model.proba(e2[None, :])[0].argmax() == 1


def test_knobs_round_trip_and_older_files_load(tmp_path) -> None:
    x = np.eye(2, dtype=np.float32)
    model = RouterModel.fit(np.vstack([x] * 3), ["a", "b"] * 3, vote="topmean", k=5, mix=0.5, temperature=0.05)
    model.floor, model.sharpness, model.hub_weight = 0.25, 1.4, 0.25
    model.hubness = np.arange(6, dtype=np.float32) / 8
    model.save(tmp_path / "m.npz")
    back = RouterModel.load(tmp_path / "m.npz")
    assert (back.vote, back.floor, back.sharpness, back.k, back.mix) == ("topmean", 0.25, 1.4, 5, 0.5)
    assert back.hub_weight == 0.25 and np.allclose(back.hubness, model.hubness)
    with np.load(tmp_path / "m.npz") as z:
        old = {k: z[k] for k in z.files if k != "hubness"}
    old["knobs"] = old["knobs"][:4]  # a file from before vote, floor and hubness
    np.savez(tmp_path / "old.npz", **old)
    older = RouterModel.load(tmp_path / "old.npz")
    assert (older.vote, older.floor, older.sharpness, older.hub_weight) == ("knn", 0.0, 1.4, 0.0)
    assert not older.hubness.any()
    np.savez(tmp_path / "bad.npz", **{**old, "hubness": np.zeros(2, np.float16)})  # damaged: 2 values, 6 examples
    with pytest.raises(ConfigError, match="unreadable: 2 hubness values for 6 examples"):
        RouterModel.load(tmp_path / "bad.npz")


def test_an_example_close_to_every_question_wins_less() -> None:
    """CSLS: a class whose one example lies near every typical question (a hub) loses a question
    that is only a little nearer to it than to a class with a specific example."""
    from ech0_moe.routing.model import hubness

    hub, specific = np.array([1.0, 0.0, 0.0], np.float32), np.array([0.0, 1.0, 0.0], np.float32)
    typical = np.array([[0.9, 0.1, 0.42], [0.9, -0.1, 0.42], [0.8, 0.2, 0.57]], np.float32)
    model = RouterModel(
        ["hub", "specific"], np.zeros((2, 3)), np.zeros(2), (), np.vstack([hub, specific]), np.array([0, 1])
    )
    model.mix, model.vote, model.k, model.temperature = 1.0, "topmean", 1, 0.05
    question = np.array([[0.72, 0.69, 0.0]], np.float32)
    assert model.proba(question)[0].argmax() == 0
    model.hubness, model.hub_weight = hubness(model.memory, typical, k=2), 0.25
    assert model.hubness[0] > 0.8 > model.hubness[1]
    assert model.proba(question)[0].argmax() == 1


def test_a_description_lists_its_topics() -> None:
    from ech0_moe.routing.rows import topic_phrases

    assert topic_phrases("Law - contracts, wills and divorce.") == ["contracts", "wills", "divorce"]
    assert topic_phrases("Cooking: recipes, baking; sauces") == ["recipes", "baking", "sauces"]
    assert topic_phrases("Questions about high school biology.") == []  # a sentence, not a list
    assert topic_phrases("tax, pensions, deadlines") == ["tax", "pensions", "deadlines"]


def test_a_text_shared_by_a_domains_experts_stays_with_the_nearest_one() -> None:
    """A written example (or taught chunk) of a domain with two experts trains only the one whose
    own rows it lies nearest; texts of one expert, and the experts' own rows, are all kept."""
    from pathlib import Path

    from ech0_moe.config import load_config
    from ech0_moe.routing.fit import shared_to_nearest
    from ech0_moe.routing.rows import pool_rows

    config = load_config(Path(__file__).resolve().parents[2] / "examples" / "pool-16.yaml", check_files=False)
    own = pool_rows(config, written=False)
    rng = np.random.default_rng(0)
    axes = {name: rng.normal(size=768) for name in config.names}
    unit = lambda v: v / np.linalg.norm(v)  # noqa: E731
    vectors = [unit(axes[e] + 0.3 * rng.normal(size=768)) for _, e in own]
    shared = [
        ("Is every group of prime order cyclic?", "school_math"),
        ("Is every group of prime order cyclic?", "university_math"),
    ]
    single = [("What is the Bill of Rights?", "law")]
    rows = own + shared + single
    vectors += [unit(axes["university_math"])] * 2 + [unit(axes["law"])]
    keep = shared_to_nearest(config, rows, np.array(vectors, np.float32))
    assert [rows[i] for i in keep] == [*own, shared[1], *single]


def test_the_typical_question_counts_the_users_labelled_questions_once_each() -> None:
    from ech0_moe.routing.fit import CENTER_DOMAINS, typical_questions
    from ech0_moe.routing.rows import written_examples

    class Cache:  # every text's features: a constant vector
        def features(self, texts):
            return np.ones((len(texts), 768), np.float32)

    written = sum(len(written_examples()[d]) for d in CENTER_DOMAINS)
    assert np.allclose(typical_questions(Cache()).mean(axis=0), 1.0)
    questions = np.zeros((written, 768), np.float32)  # as many as our written examples: half the weight
    assert np.allclose(typical_questions(Cache(), questions).mean(axis=0), 0.5)
