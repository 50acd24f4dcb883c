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
    ok = main([*where, "feedback", "Why is the sky blue?", "--expert", "physics", "--json"])
    assert ok == 0 and json.loads(capsys.readouterr().out)["recorded"]["expert"] == "physics"
    bad = main([*where, "feedback", "Lease?", "--expert", "law"])
    err = capsys.readouterr().err
    assert bad == 2 and err.count("\n") == 1 and "unknown expert 'law'" in err


def test_other_owners_feedback_reaches_an_askers_routing_only_within_the_bound(pool_config) -> None:
    from ech0_moe.routing.rows import SHARED_FEEDBACK_PER_OWNER

    rows = [{"text": f"q{i}", "expert": "biology", "source": "feedback", "owner": "alice"} for i in range(50)]
    rows += [{"text": "q0", "expert": "biology", "source": "feedback", "owner": "bob"}]  # the same row: once
    rows += [{"text": "cells", "domain": "biology", "source": "/d.md", "owner": "alice"}]  # alice's document
    rows += [{"text": "orbits", "domain": "physics", "source": "/p.md"}]  # shared (older rows: no owner)
    assert len(taught_rows(pool_config, rows, "alice")) == 50 + 1 + 1
    for_bob = taught_rows(pool_config, rows, "bob")
    assert ("cells", "biology") not in for_bob and ("orbits", "physics") in for_bob
    # never more than the pool's own rows for the expert (here its description alone), nor the per-owner bound
    assert sum(e == "biology" for _, e in for_bob) == min(1, SHARED_FEEDBACK_PER_OWNER)


def test_our_written_examples_count_only_when_every_specialist_has_them(pool_config, tmp_path) -> None:
    from ech0_moe.config import load_config
    from ech0_moe.routing.rows import pool_rows, unwritten_domains

    assert unwritten_domains(pool_config) == [] and len(pool_rows(pool_config)) > len(pool_rows(pool_config, False))
    body = pool_config.path.read_text().replace("domain: physics", "domain: knitting")
    (tmp_path / "mixed.yaml").write_text(body)
    mixed = load_config(tmp_path / "mixed.yaml")
    assert unwritten_domains(mixed) == ["knitting"] and pool_rows(mixed) == pool_rows(mixed, written=False)
