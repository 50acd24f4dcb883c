"""Routing examples the user gives without writing any: documents with a domain, feedback."""

from __future__ import annotations

import json

import pytest

from ech0_moe.errors import InputError
from ech0_moe.routing import taught
from ech0_moe.routing.fit import pool_fingerprint
from ech0_moe.routing.rows import taught_rows


def test_documents_are_kept_per_domain_up_to_the_cap_and_forgotten_with_their_file(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(taught, "PER_DOMAIN", 3)
    chunks = [(f"chunk {i} about contracts", "/docs/law.md") for i in range(5)]
    assert taught.add_documents(tmp_path, "law", chunks) == 3
    assert taught.add_documents(tmp_path, "law", [("one more", "/docs/other.md")]) == 0  # the domain is full
    assert taught.add_documents(tmp_path, "medicine", [("dose and side effects", "/docs/med.md")] * 2) == 1
    assert [r["domain"] for r in taught.read(tmp_path)] == ["law"] * 3 + ["medicine"]
    assert taught.forget_source(tmp_path, "/docs/law.md") == 3
    assert [r["text"] for r in taught.read(tmp_path)] == ["dose and side effects"]
    (tmp_path / taught.FILE).write_text((tmp_path / taught.FILE).read_text() + "not json\n{}\n")
    assert len(taught.read(tmp_path)) == 1  # a damaged line is skipped, not fatal


def test_feedback_names_an_expert_of_the_pool(tmp_path, pool_config) -> None:
    row = taught.add_feedback(tmp_path, pool_config, "  What is  an orbit? ", "physics")
    assert row["text"] == "What is an orbit?" and row["expert"] == "physics"
    with pytest.raises(InputError, match=r"unknown expert 'law'; known: math, physics, biology, general"):
        taught.add_feedback(tmp_path, pool_config, "Can I break a lease?", "law")
    with pytest.raises(InputError, match="needs the question"):
        taught.add_feedback(tmp_path, pool_config, "   ", "math")
    assert len(taught.read(tmp_path)) == 1


def test_taught_rows_teach_the_domain_s_experts_and_change_the_fit(tmp_path, pool_config) -> None:
    rows = [
        {"text": "mitosis and meiosis", "domain": "biology"},
        {"text": "a tort claim", "domain": "law"},  # no expert of that domain: ignored
        {"text": "what is an orbit", "expert": "physics"},
        {"text": "old", "expert": "removed-expert"},  # no longer in the pool: ignored
    ]
    pairs = taught_rows(pool_config, rows)
    assert pairs == [("mitosis and meiosis", "biology"), ("what is an orbit", "physics")]
    assert pool_fingerprint(pool_config, (), pairs) != pool_fingerprint(pool_config)  # a refit, cached apart


def test_feedback_command_is_one_line_on_a_bad_expert(tmp_path, pool_config, capsys) -> None:
    from ech0_moe.cli import main

    where = ["--experts", str(pool_config.path), "--kb", str(tmp_path / "kb")]
    ok = main([*where, "feedback", "Why is the sky blue?", "--expert", "physics"])
    assert ok == 0 and json.loads(capsys.readouterr().out)["recorded"]["expert"] == "physics"
    bad = main([*where, "feedback", "Lease?", "--expert", "law"])
    err = capsys.readouterr().err
    assert bad == 2 and err.count("\n") == 1 and "unknown expert 'law'" in err
