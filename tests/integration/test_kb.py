"""Knowledge base on a real Chroma PersistentClient: ingest, search, learn, forget, crash safety."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from ech0_moe.errors import Ech0Error
from ech0_moe.memory.kb import KnowledgeBase

ROOT = Path(__file__).resolve().parents[2]

DOCS = ROOT / "benchmarks" / "docs"


@pytest.fixture
def kb(tmp_path: Path) -> KnowledgeBase:
    return KnowledgeBase(tmp_path / "kb")


def test_add_is_chunked_idempotent_and_replaces_changed_files(kb: KnowledgeBase, tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    shutil.copytree(DOCS, docs)
    first = kb.add_paths([docs], progress=False)
    assert first["added"] == 7 and first["chunks"] == kb.count() > 50
    assert kb.add_paths([docs], progress=False)["unchanged"] == 7
    before = kb.count()
    glib = docs / "glib.md"
    glib.write_text(glib.read_text().replace("GLib is the low-level core library", "GLib is the core library"))
    again = kb.add_paths([docs], progress=False)
    assert again["added"] == 1 and again["unchanged"] == 6
    assert kb.count() == before  # stale chunks of glib.md removed, new ones added
    assert all("low-level core library" not in h.text for h in kb.search("What is GLib?", k=4))


def test_search_has_provenance_threshold_and_no_duplicates(kb: KnowledgeBase, tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    shutil.copy(DOCS / "libffi.md", tmp_path / "a" / "ffi.md")
    shutil.copy(DOCS / "libffi.md", tmp_path / "b" / "ffi-copy.md")
    kb.add_paths([tmp_path / "a", tmp_path / "b"], progress=False)
    hits = kb.search("What does FFI stand for?", k=4)
    assert hits and "Foreign Function Interface" in hits[0].text
    assert hits[0].kind == "document" and hits[0].source.endswith(".md") and 0 < hits[0].score <= 1
    texts = [h.text for h in hits]
    assert len(texts) == len(set(texts))  # the identical copy's chunks are not repeated
    assert kb.search("What does FFI stand for?", k=4, max_distance=0.05) == []


def test_domain_filter(kb: KnowledgeBase, tmp_path: Path) -> None:
    shutil.copy(DOCS / "zstd.md", tmp_path / "zstd.md")
    kb.add_paths([tmp_path / "zstd.md"], domain="computer_science", progress=False)
    assert kb.search("zstd dictionary training", domain="computer_science")
    assert kb.search("zstd dictionary training", domain="biology") == []


def test_learn_updates_near_duplicates_and_skips_empty(kb: KnowledgeBase) -> None:
    bio = {"expert": "biology", "domain": "biology", "mode": "x"}
    a = kb.learn("What is the powerhouse of the cell?", "The mitochondrion.", **bio)
    b = kb.learn("Which organelle is the powerhouse of the cell?", "Mitochondria.", **bio)
    assert a == b and kb.count() == 1
    c = kb.learn("What is 2 + 3?", "5", expert="math", domain="mathematics", mode="x")
    d = kb.learn("What is 2 + 2?", "4", expert="math", domain="mathematics", mode="x")
    assert c != d and kb.count() == 3  # similar wording, different numbers: not a duplicate
    assert kb.learn("What is 7 + 7?", "   ", expert="math", domain="mathematics", mode="x") is None
    hit = kb.search("powerhouse of the cell", k=1)[0]
    assert hit.kind == "learned" and hit.source == "learned:biology" and "Mitochondria" in hit.text


def test_forget_by_id_and_source(kb: KnowledgeBase, tmp_path: Path) -> None:
    shutil.copy(DOCS / "glib.md", tmp_path / "glib.md")
    kb.add_paths([tmp_path / "glib.md"], progress=False)
    entry = kb.learn("Who maintains GLib?", "The GNOME project.", expert="general", domain="general", mode="x")
    assert entry and kb.forget(ids=[entry])["entries"] == 1
    assert kb.forget(source=str(tmp_path / "glib.md"))["entries"] > 0 and kb.count() == 0
    assert kb.forget(ids=["no-such-id"]) == {"entries": 0, "routing_rows": 0}


def test_unwritable_folder_is_a_clear_error(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        blocker = tmp_path / "file"
        blocker.write_text("not a folder")
        with pytest.raises(Ech0Error, match="is not writable"):
            KnowledgeBase(blocker / "kb")
    else:  # pragma: no cover - non-root
        ro = tmp_path / "ro"
        ro.mkdir(mode=0o500)
        with pytest.raises(Ech0Error, match="is not writable"):
            KnowledgeBase(ro / "kb")


def test_sigkill_during_ingest_loses_nothing_committed(tmp_path: Path) -> None:
    docs = tmp_path / "many"
    docs.mkdir()
    originals = sorted(DOCS.iterdir())
    for i in range(28):
        src = originals[i % len(originals)]
        (docs / f"{i:02d}-{src.name}").write_text(f"Copy {i} of {src.name}.\n\n" + src.read_text())
    kb_dir = tmp_path / "kb"
    cmd = [sys.executable, "-m", "ech0_moe.cli", "kb", "add", str(docs), "--kb", str(kb_dir)]
    proc = subprocess.Popen(cmd, cwd=ROOT, stderr=subprocess.PIPE, text=True)
    progress: list[str] = []
    reader = threading.Thread(target=lambda: progress.extend(iter(lambda: proc.stderr.read(64), "")), daemon=True)
    reader.start()
    done, deadline = 0, time.time() + 120
    while done < 4 and time.time() < deadline and proc.poll() is None:
        found = re.findall(r"(\d+)/28 files done", "".join(progress))
        done = int(found[-1]) if found else 0
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL and done >= 4

    kb = KnowledgeBase(kb_dir)  # opens cleanly after the kill
    assert kb.stats()["sources"] >= done  # every file reported done is there
    assert kb.lexical is not None and kb.lexical.count() == kb.count()  # the BM25 index holds the same entries
    assert kb.search("What does FFI stand for?", k=1)
    report = kb.add_paths([docs], progress=False)  # resuming finishes the rest, redoing nothing committed
    assert report["unchanged"] >= done and report["added"] + report["unchanged"] == 28
    from ech0_moe.memory import loaders
    from ech0_moe.memory.ingest import _chunks

    def chunks(f: Path) -> int:  # what a fresh `kb add` stores of the file, without encoding it again
        return len(dict(_chunks(str(f.resolve()), ((p.text, p.page) for p in loaders.load(f)[0]))))

    assert kb.count() == sum(chunks(f) for f in docs.iterdir()) == kb.lexical.count()


def test_names_and_numbers_are_found_by_the_lexical_index(kb: KnowledgeBase, tmp_path: Path) -> None:
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "parts.md").write_text(
        "# Parts\n\nThe pump uses gasket QX-4471 rated for 90 degrees. The valve is brass.\n\n"
        "# Staff\n\nMaintenance is done by Ingrid Oyelaran-Sato every Tuesday.\n"
    )
    kb.add_paths([DOCS, notes], progress=False)
    for question, needle in (("Which part is QX-4471?", "QX-4471"), ("Who is Oyelaran-Sato?", "Oyelaran")):
        lexical = kb.search(question, k=1, method="lexical")
        fused = kb.search(question, k=4)
        assert lexical and needle in lexical[0].text
        assert any(needle in p.text for p in fused)


def test_forget_removes_from_both_indexes_and_a_lost_index_is_rebuilt(kb: KnowledgeBase, tmp_path: Path) -> None:
    kb.add_paths([DOCS], progress=False)
    entry = kb.learn("What colour is the launch button?", "It is teal.", expert="general", domain="general", mode="t")
    assert kb.lexical is not None and kb.lexical.count() == kb.count()
    assert kb.search("launch button colour teal", k=1, method="lexical")[0].id == entry
    assert kb.forget(ids=[entry])["entries"] == 1
    assert entry not in kb.lexical.ids() and kb.lexical.count() == kb.count()
    # a write that reached Chroma but not the lexical index (killed in between), and a deleted index
    kb.col.upsert(ids=["orphan"], documents=["A note about the zeppelin hangar."], metadatas=[{"kind": "document"}])
    assert KnowledgeBase(kb.path).search("zeppelin hangar", k=1, method="lexical")[0].id == "orphan"
    (kb.path / "lexical.sqlite3").unlink()
    again = KnowledgeBase(kb.path)
    assert again.lexical is not None and again.lexical.count() == again.count() > 100
    # an index in the first layout (one FTS5 table with an id column, whose deletes scanned it all)
    (kb.path / "lexical.sqlite3").unlink()
    with sqlite3.connect(kb.path / "lexical.sqlite3") as old:
        old.execute("CREATE VIRTUAL TABLE entries USING fts5(id UNINDEXED, text, domain UNINDEXED, kind UNINDEXED)")
        old.execute("INSERT INTO entries VALUES ('orphan', 'A note about the zeppelin hangar.', '', 'document')")
    moved = KnowledgeBase(kb.path)
    assert moved.lexical is not None and moved.lexical.count() == moved.count() > 100
    assert moved.search("zeppelin hangar", k=1, method="lexical")[0].id == "orphan"


def test_a_damaged_store_is_one_line_and_the_graph_still_answers(
    tmp_path: Path, run_cli, assert_one_line_error
) -> None:
    from ech0_moe.graph import Context, build_graph
    from ech0_moe.services import ServiceRegistry

    kb = KnowledgeBase(tmp_path / "kb")
    kb.learn("What is the capital of France?", "Paris.", expert="general", domain="general", mode="x")
    del kb
    database = tmp_path / "kb" / "chroma.sqlite3"
    database.write_bytes(b"this is not a database" * 200)
    assert_one_line_error(run_cli("kb", "stats", "--kb", str(tmp_path / "kb")), "file is not a database")
    ctx = Context(kb_dir=str(tmp_path / "kb"), max_tokens=8)
    result = build_graph(services=ServiceRegistry()).invoke({"query": "What is the capital of France?"}, context=ctx)
    assert result["solution"] and result["error"] == "" and result["retrieved_contexts"] == []
    kinds = [w.split(":")[0] for w in result["warnings"]]
    # a finished answer is learned, which the damaged store refuses; a truncated one is never learned
    after = "the answer stopped at its token cap (8 tokens)" if result["truncated"] else "not learned"
    assert kinds == ["retrieve skipped", after]
    assert database.read_bytes() == b"this is not a database" * 200  # nothing stored was rewritten


def _rows(database: Path) -> list[tuple]:
    with sqlite3.connect(database) as db:
        return db.execute("SELECT * FROM embedding_metadata ORDER BY id, key").fetchall()


def test_a_missing_index_segment_is_one_line_and_the_graph_still_answers(tmp_path: Path, run_cli) -> None:
    from ech0_moe.bench.rag import _pad

    kb = KnowledgeBase(tmp_path / "kb")
    kb.add_paths([DOCS], progress=False)
    _pad(kb, 1200)  # past Chroma's sync threshold: the vectors now live in the HNSW segment on disk
    del kb
    (segment,) = [d for d in (tmp_path / "kb").iterdir() if d.is_dir()]
    shutil.rmtree(segment)
    database = _rows(tmp_path / "kb" / "chroma.sqlite3")
    proc = run_cli("kb", "search", "Which RFC documents the Zstandard format?", kb=tmp_path / "kb")
    assert proc.returncode == 2 and proc.stderr.startswith(f"ech0-moe: error: knowledge base {tmp_path / 'kb'}: ")
    # a new process (this one's Chroma client still holds the index in memory)
    proc = run_cli(
        "ask", "--json", "--max-tokens", "8", "--mode", "optimized", "Which RFC documents zstd?", kb=tmp_path / "kb"
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["solution"] and result["error"] == "" and result["retrieved_contexts"] == []
    after = "the answer stopped at its token cap (8 tokens)" if result["truncated"] else "not learned"
    assert [w.split(":")[0] for w in result["warnings"]] == ["retrieve skipped", after]
    assert _rows(tmp_path / "kb" / "chroma.sqlite3") == database  # no entry lost or rewritten


def test_an_empty_database_file_is_not_silently_replaced(tmp_path: Path) -> None:
    (tmp_path / "kb").mkdir()
    (tmp_path / "kb" / "chroma.sqlite3").write_bytes(b"")
    with pytest.raises(Ech0Error, match=r"chroma.sqlite3 is empty \(0 bytes\), not a store"):
        KnowledgeBase(tmp_path / "kb")
    assert (tmp_path / "kb" / "chroma.sqlite3").stat().st_size == 0


def test_add_skips_symlinks_out_of_the_folder_and_binary_files(kb: KnowledgeBase, tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("The vault code is 7431. " * 5)
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "notes.md").write_text("Zstandard compresses data quickly with dictionaries. " * 4)
    (folder / "link.txt").symlink_to(secret)
    (folder / "zeros.txt").write_bytes(b"\0" * 4096)
    report = kb.add_paths([folder], progress=False)
    assert report["added"] == 1
    assert sorted(s.split(": ", 1)[1] for s in report["skipped"]) == [
        f"a symlink out of {folder} (not followed)",
        "binary (NUL bytes)",
    ]
    assert not [h for h in kb.search("vault code", k=4, max_distance=2.0) if "7431" in h.text]
    assert kb.add_paths([folder], progress=False, follow_symlinks=True)["added"] == 1  # asked for: followed


WRITER = """
import sys
from ech0_moe.memory.kb import KnowledgeBase

kb, tag, failed = KnowledgeBase(sys.argv[1]), int(sys.argv[2]), 0
for i in range(40):
    try:
        kb.learn(f"What is {i} plus {tag}?", f"It is {i + tag}.", expert="math", domain="mathematics", mode="x")
        kb.search(f"What is {i} plus", k=2)
    except Exception as exc:
        failed += 1
print(failed)
"""


def test_two_processes_learning_into_one_folder_lose_nothing(tmp_path: Path) -> None:
    KnowledgeBase(tmp_path / "kb").count()
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, str(tmp_path / "kb"), str(tag)], stdout=subprocess.PIPE, text=True
        )
        for tag in (1000, 2000)
    ]
    outs = [p.communicate(timeout=240)[0].strip() for p in procs]
    assert outs == ["0", "0"]  # no failed run on either side
    kb = KnowledgeBase(tmp_path / "kb")
    assert kb.count() == 80 and kb.stats()["by_kind"] == {"learned": 80}


def test_add_skips_files_over_the_size_limit_and_reports_throughput(kb: KnowledgeBase, tmp_path: Path) -> None:
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "small.md").write_text("Zstandard compresses data quickly with dictionaries. " * 4)
    (folder / "big.md").write_text("A long manual about compression levels and window sizes. " * 100)
    report = kb.add_paths([folder], progress=False, max_bytes=2_000)
    assert report["added"] == 1 and report["chunks_per_second"] > 0
    assert report["skipped"] == [f"{folder / 'big.md'}: larger than 0.002MB (raise the limit with --max-file-mb)"]
    assert kb.add_paths([folder], progress=False, max_bytes=10_000)["added"] == 1  # raised: now it goes in


def _in_private_mounts(script: str) -> None:
    """Run a bash script in a mount namespace of its own, where a read-only bind mount or a small
    tmpfs is a real read-only folder or full disk (as root, chmod does not stop writes)."""
    if shutil.which("unshare") is None or subprocess.run(["unshare", "-m", "true"], capture_output=True).returncode:
        pytest.skip("needs `unshare -m` (a mount namespace of its own) for a read-only folder or a full disk")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PY": sys.executable}
    proc = subprocess.run(["unshare", "-m", "bash", "-euc", script], capture_output=True, text=True, cwd=ROOT, env=env)
    assert proc.returncode == 0, proc.stderr


ASK = '"$PY" -m ech0_moe.cli ask --json --max-tokens 48 --mode optimized "Name one French city." --kb'


def _survived(out: Path) -> dict:
    """The answer of `ASK` (written to `out`): answered from what was stored, and nothing learned."""
    import json

    result = json.loads(out.read_text())
    assert result["solution"].strip() and result["error"] == "" and not result["truncated"]
    assert [c["source"] for c in result["retrieved_contexts"]] == ["learned:general"]  # searched all the same
    return result


def test_a_read_only_store_is_searched_and_never_written(tmp_path: Path, assert_one_line_error) -> None:
    kb = KnowledgeBase(tmp_path / "kb")
    kb.learn("What is the capital of France?", "Paris is.", expert="general", domain="general", mode="x")
    del kb
    before = {p.name: p.read_bytes() for p in (tmp_path / "kb").iterdir() if p.is_file()}
    kb_dir, out = tmp_path / "kb", tmp_path / "out"
    _in_private_mounts(
        f"mount --bind {kb_dir} {kb_dir} && mount -o remount,bind,ro {kb_dir}\n"
        f"{ASK} {kb_dir} > {out}.ask\n"
        f'"$PY" -m ech0_moe.cli kb add README.md --kb {kb_dir} 2> {out}.add || echo $? > {out}.rc\n'
        f'"$PY" -m ech0_moe.cli kb stats --json --kb {kb_dir} > {out}.stats\n'
    )
    result = _survived(Path(f"{out}.ask"))
    assert result["warnings"] == [
        f"not learned: knowledge base {kb_dir} cannot be written (Read-only file system): nothing was stored"
    ]
    add = subprocess.CompletedProcess([], int(Path(f"{out}.rc").read_text()), "", Path(f"{out}.add").read_text())
    assert_one_line_error(add, "cannot be written (Read-only file system): nothing was stored")
    assert '"read_only": "Read-only file system"' in Path(f"{out}.stats").read_text()
    assert {p.name: p.read_bytes() for p in kb_dir.iterdir() if p.is_file()} == before  # not one byte rewritten


def test_a_full_disk_keeps_the_answer_and_every_stored_entry(tmp_path: Path) -> None:
    disk, out = tmp_path / "disk", tmp_path / "out"
    disk.mkdir()
    fill_then_learn = tmp_path / "fill.py"  # the disk fills up under a process that has the store open
    fill_then_learn.write_text(
        "import sys\n"
        "from ech0_moe.memory.kb import KnowledgeBase, KnowledgeBaseError\n"
        f"kb = KnowledgeBase({str(disk / 'kb')!r})\n"
        "kb.learn('What is the capital of France?', 'Paris is.', expert='general', domain='general', mode='x')\n"
        f"with open({str(disk / 'filler')!r}, 'wb') as filler:\n"
        "    try:\n"
        "        while True:\n"
        "            filler.write(bytes(1 << 16))\n"
        "            filler.flush()\n"
        "    except OSError:\n"
        "        pass\n"
        "try:\n"
        "    kb.learn('What is the capital of Spain?', 'Madrid.', expert='general', domain='general', mode='x')\n"
        "except KnowledgeBaseError as exc:\n"
        "    print(exc)\n"
    )
    _in_private_mounts(
        f"mount -t tmpfs -o size=4m tmpfs {disk}\n"
        f'"$PY" {fill_then_learn} > {out}.learn\n'
        f"{ASK} {disk}/kb > {out}.ask\n"  # a new process, the disk still full
        f"rm {disk}/filler\n"
        f'"$PY" -m ech0_moe.cli kb stats --json --kb {disk}/kb > {out}.stats\n'
    )
    said = Path(f"{out}.learn").read_text().strip()  # one line, not a traceback
    assert said.startswith(f"knowledge base {disk}/kb: ") and said.endswith("database or disk is full"), said
    result = _survived(Path(f"{out}.ask"))
    assert result["warnings"] == [
        f"not learned: knowledge base {disk}/kb cannot be written (disk is full): nothing was stored"
    ]
    assert '"entries": 1' in Path(f"{out}.stats").read_text()  # the entry stored before is still there


def test_one_write_larger_than_chromas_batch_limit_is_stored_whole(kb: KnowledgeBase) -> None:
    import numpy as np

    n = kb._client.get_max_batch_size() + 100  # a 5 MB text file's chunks, written at once
    vectors = np.random.default_rng(0).normal(size=(n, 384)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    texts = [f"note {i} about item{i}" for i in range(n)]
    kb.upsert([f"n{i}" for i in range(n)], texts, [{"kind": "document", "source": "big", "domain": ""}] * n, vectors)
    assert kb.count() == n and len(list(kb.entries({"source": "big"}))) == n
