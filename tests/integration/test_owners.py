"""Memory has owners, on the real store (Chroma and the FTS5 index), the real router and the CLI:
one asker's learned answers, documents and feedback never reach another asker's prompts or
routing; the shared namespace is read by everyone; stores older than owners are upgraded."""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from ech0_moe.config import load_config
from ech0_moe.memory.kb import KnowledgeBase
from ech0_moe.owners import readable_by
from tests.integration.conftest import ROOT

DOCS = ROOT / "benchmarks" / "docs"


def _sources(hits) -> set[tuple[str, str]]:
    return {(h.kind, h.owner) for h in hits}


def test_each_asker_reads_its_own_memory_and_the_shared_documents(tmp_path: Path) -> None:
    kb = KnowledgeBase(tmp_path / "kb")
    for name in ("zstd.md", "glib.md"):
        shutil.copy(DOCS / name, tmp_path / name)
    kb.add_paths([tmp_path / "zstd.md"], progress=False)  # shared by default
    kb.add_paths([tmp_path / "glib.md"], namespace="alice", progress=False)
    kb.learn("How do I train a zstd dictionary?", "Run zstd --train on samples.", expert="e", domain="", mode="x",
             owner="alice")  # fmt: skip
    for method in ("fused", "dense", "lexical"):  # the two indexes hold the same owners
        for query in ("How do I train a zstd dictionary?", "What does GLib provide?"):
            bob = kb.search(query, k=20, max_distance=2.0, owners=readable_by("bob"), method=method)
            assert _sources(bob) <= {("document", "shared")}, (method, query)
        alice = kb.search("What does GLib provide?", k=20, max_distance=2.0, owners=readable_by("alice"), method=method)
        assert ("document", "alice") in _sources(alice), method
        mine = kb.search("How do I train a zstd dictionary?", max_distance=2.0, owners=("alice",), method=method)
        assert ("learned", "alice") in _sources(mine), method
    # the same file in two namespaces is two sets of entries: adding or forgetting one keeps the other
    shared = kb.stats("shared")["entries"]
    kb.add_paths([tmp_path / "zstd.md"], namespace="alice", progress=False)
    assert kb.stats("alice")["entries"] == shared + kb.stats("alice")["by_kind"]["document"] - shared + 1
    assert kb.add_paths([tmp_path / "zstd.md"], progress=False)["unchanged"] == 1
    removed = kb.forget(source=str(tmp_path / "zstd.md"), owner="alice")
    assert removed["entries"] == shared and kb.stats("shared")["entries"] == shared


def test_a_learned_answer_of_one_owner_never_updates_anothers(tmp_path: Path) -> None:
    kb = KnowledgeBase(tmp_path / "kb")
    a = kb.learn("What is 2+2?", "4", expert="math", domain="mathematics", mode="x", owner="alice")
    b = kb.learn("What is 2+2?", "5", expert="math", domain="mathematics", mode="x", owner="bob")
    assert a != b and kb.count() == 2
    assert kb.learn("What is 2+2 exactly?", "4.", expert="math", domain="mathematics", mode="x", owner="alice") == a


def test_a_store_made_before_owners_is_upgraded_on_open(tmp_path: Path) -> None:
    """Entries without an owner (an older store): documents become shared, learned answers the
    local owner's; the lexical index of the older layout is rebuilt with the owners."""
    path = tmp_path / "kb"
    kb = KnowledgeBase(path)
    kb.upsert(
        ["d1", "l1"],
        ["Zstandard trains dictionaries.", "Q: Who wrote GLib?\nA: GNOME."],
        [{"kind": "document", "source": "/x/zstd.md"}, {"kind": "learned", "source": "learned:general"}],
        embeddings=np.eye(2, 384, dtype=np.float32),
    )
    kb.lexical.close()
    db = sqlite3.connect(path / "lexical.sqlite3")  # the older layout: no owner column
    db.execute("DROP TABLE passages")
    db.execute("CREATE VIRTUAL TABLE passages USING fts5(text, domain UNINDEXED, kind UNINDEXED)")
    db.commit()
    db.close()
    script = f"from ech0_moe.memory.kb import KnowledgeBase; print(KnowledgeBase({str(path)!r}).stats())"
    reopened = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert reopened.returncode == 0, reopened.stderr
    assert "'by_owner': {'shared': 1, 'local': 1}" in reopened.stdout
    kb = KnowledgeBase(path)
    owners = {i: m["owner"] for i, m in kb.entries()}
    assert owners == {"d1": "shared", "l1": "local"}
    hits = kb.search("Who wrote GLib?", max_distance=2.0, method="lexical", owners=readable_by("bob"))
    assert [h.id for h in hits] == []  # the local owner's answer is not bob's


def test_feedback_steers_its_owners_routing_and_others_only_within_a_bound(tmp_path: Path, run_cli) -> None:
    from ech0_moe.routing import taught
    from ech0_moe.routing.router import taught_router
    from ech0_moe.routing.rows import SHARED_FEEDBACK_PER_OWNER, taught_rows

    config = load_config(ROOT / "experts.yaml")
    kb_dir = tmp_path / "kb"
    questions = [f"What is the derivative of x^{n} + {n}x?" for n in range(2, 30)]
    for q in questions:
        taught.add_feedback(kb_dir, config, q, "biology", owner="alice")
    rows = taught.read(kb_dir)
    assert len(taught_rows(config, rows, "alice")) == len(questions)
    assert len(taught_rows(config, rows, "bob")) == SHARED_FEEDBACK_PER_OWNER  # alice's reach into bob's routing
    probe = "What is the derivative of x^31 + 31x?"
    assert taught_router(config, kb_dir, "alice").route(probe).expert == "biology"
    assert taught_router(config, kb_dir, "bob").route("Solve 3x + 7 = 22 for x.").expert == "math"
    gone = run_cli("kb", "forget", "--source", "feedback", "--namespace", "alice", "--json", kb=kb_dir)
    assert gone.returncode == 0, gone.stderr
    assert '"routing_rows_removed": 28' in gone.stdout and taught.read(kb_dir) == []


def test_feedback_into_a_read_only_folder_is_one_line(tmp_path: Path, run_cli, assert_one_line_error) -> None:
    kb_dir = tmp_path / "kb"
    kb_dir.mkdir()
    (kb_dir / "routing-examples.jsonl").mkdir()  # a folder where the file should be: not writable as a file
    proc = run_cli("feedback", "What is 2+2?", "--expert", "math", kb=kb_dir)
    assert_one_line_error(proc, "cannot be written")


def test_a_damaged_cached_router_is_fitted_again_and_one_process_fits_for_many(tmp_path: Path) -> None:
    """After one feedback, several `route` processes at once: one fits, the rest read its file;
    a cached model of random bytes is a warning and a refit, not an error on every command."""
    from ech0_moe.paths import cache_dir
    from ech0_moe.routing import taught
    from ech0_moe.routing.fit import pool_fingerprint
    from ech0_moe.routing.rows import taught_rows

    kb_dir = tmp_path / "kb"
    config = load_config(ROOT / "experts.yaml")
    taught.add_feedback(kb_dir, config, f"Is a tomato a fruit? ({time.time_ns()})", "biology")  # a model never fitted
    cached = cache_dir() / "routers" / f"{pool_fingerprint(config, (), taught_rows(config, taught.read(kb_dir)))}.npz"
    cmd = [sys.executable, "-m", "ech0_moe.cli", "--kb", str(kb_dir), "route", "What is a prime number?"]
    run = {"cwd": ROOT, "text": True, "stdout": subprocess.PIPE, "stderr": subprocess.PIPE}
    try:
        procs = [subprocess.Popen(cmd, **run) for _ in range(4)]
        outs = [p.communicate(timeout=300) for p in procs]
        assert all(p.returncode == 0 for p in procs), outs
        assert sum("router fitted" in err for _, err in outs) == 1, [e for _, e in outs]
        cached.write_bytes(b"\x00garbage" * 100)
        again = subprocess.run(cmd, timeout=300, **run)
        assert again.returncode == 0, again.stderr
        assert "is unreadable" in again.stderr and "fitting it again" in again.stderr
        assert "router fitted" in again.stderr
    finally:
        cached.unlink(missing_ok=True)


def test_bench_injection_meets_its_goals(run_cli) -> None:
    """Two owners on one knowledge base, 41 injection variants and 6 documents (`bench injection`)."""
    proc = run_cli("bench", "injection", "--json", timeout=600)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.splitlines()[-1])
    assert out["variants"] >= 40 and out["learned_by_a"] == out["variants"]
    assert out["a_entries_retrieved_for_b"] == 0 and out["a_markers_in_b_prompts"] == 0
    assert out["a_markers_reaching_a_prompts"] >= 40 and out["a_markers_outside_quotes_in_a_prompts"] == 0
    assert out["shared_markers_quoted_in_b_prompts"] > 0 and out["shared_markers_outside_quotes_in_b_prompts"] == 0
    assert out["a_harmless_refused"] == 0 and out["stored_with_raw_control_tokens"] == 0
    assert out["routing"]["b_questions_moved_by_a_labels"] <= 1
