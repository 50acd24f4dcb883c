"""`kb add` at the encoder's speed on a real Chroma store: many small files in batches, big text
files streamed (same chunks as whole), nothing half-read stored, and `bench ingest`."""

from __future__ import annotations

import json
from pathlib import Path

from ech0_moe.bench.ingest import big_text, small_notes
from ech0_moe.memory.kb import KnowledgeBase
from ech0_moe.memory.lock import GENERATION_FILE

ROOT = Path(__file__).resolve().parents[2]


def _generation(kb_dir: Path) -> int:
    return int((kb_dir / GENERATION_FILE).read_text() or 0)


def test_small_files_are_written_in_batches_not_one_by_one(tmp_path: Path) -> None:
    notes = small_notes(tmp_path / "notes", 300)
    kb = KnowledgeBase(tmp_path / "kb")
    start = _generation(tmp_path / "kb") if (tmp_path / "kb" / GENERATION_FILE).exists() else 0
    report = kb.add_paths([notes], progress=False)
    assert report["added"] == 300 and report["skipped"] == [] and kb.stats()["sources"] == 300
    # one lock, one transaction, one generation bump per batch of ~256 chunks: 2 here, not 300
    assert _generation(tmp_path / "kb") - start <= 3
    assert set(report["seconds_in"]) >= {"read", "chunk", "encode", "write", "chroma", "lexical", "lock"}
    assert report["seconds_in"]["encode"] > report["seconds_in"]["write"]
    assert kb.lexical is not None and kb.lexical.count() == kb.count()
    bumps = _generation(tmp_path / "kb")
    again = kb.add_paths([notes, notes / "note-00001.md"], progress=False)  # named twice: read once
    assert again["files"] == 300 and again["unchanged"] == 300 and again["chunks"] == 0
    assert _generation(tmp_path / "kb") == bumps  # nothing new: nothing written


def _stored(kb: KnowledgeBase) -> set[tuple[str, str, int]]:
    got = kb.col.get(include=["documents", "metadatas"])
    return {(d, m["heading"], m["n_chunks"]) for d, m in zip(got["documents"], got["metadatas"], strict=True)}


def test_a_big_text_file_streams_to_the_same_chunks(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr("ech0_moe.memory.store.PAGE", 20)  # reads and deletes page past SQLite's limit
    big = big_text(tmp_path / "big.md", 0.06)
    whole, streamed = KnowledgeBase(tmp_path / "whole"), KnowledgeBase(tmp_path / "streamed")
    stream = {"progress": False, "stream_bytes": 20_000, "batch_chunks": 32}  # 60 kB over a 20 kB threshold
    a = whole.add_paths([big], progress=False)
    b = streamed.add_paths([big], **stream)
    assert a["chunks"] == b["chunks"] > 64  # several batches
    assert _stored(whole) == _stored(streamed)
    assert streamed.add_paths([big], **stream)["unchanged"] == 1
    # changed: the new version's chunks written, then the old version's stale chunks removed
    big.write_text(big.read_text().replace("[0]", "[zero]"))
    streamed.add_paths([big], **stream)
    whole.add_paths([big], progress=False)
    assert _stored(whole) == _stored(streamed)
    assert streamed.lexical is not None and streamed.lexical.count() == streamed.count()


def test_a_streamed_file_bad_near_its_end_stores_nothing(tmp_path: Path) -> None:
    bad = tmp_path / "bad.txt"
    bad.write_bytes(big_text(tmp_path / "ok.txt", 0.2).read_bytes() + b"\n\nthe end \xff\xfe\n")
    kb = KnowledgeBase(tmp_path / "kb")
    report = kb.add_paths([bad], progress=False, stream_bytes=10_000)
    assert report["added"] == 0 and report["skipped"] == [f"{bad}: not UTF-8 text"]
    assert kb.count() == 0


def test_bench_ingest_puts_the_encoder_beside_kb_add(run_cli, tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "zstd.md").write_text((ROOT / "benchmarks" / "docs" / "zstd.md").read_text())
    args = ("--docs", str(docs), "--small-files", "30", "--big-mb", "0.05", "--json")
    proc = run_cli("bench", "ingest", *args)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    for name in ("documents", "small_files"):
        row = out[name]
        assert row["encoder_alone"]["chunks"] == row["kb_add"]["chunks"] > 0
        assert row["encoder_alone"]["tokens_per_second"] > 0 and 0 < row["kb_add"]["share_of_encoder"] < 2
        assert row["kb_add_one_write_per_file"]["chunks"] == row["kb_add"]["chunks"]
    assert out["small_files"]["kb_add"]["files"] == 30 and out["documents"]["written_here"] is False
    assert out["big_file"]["chunks"] > 0 and out["big_file"]["resident_growth_mb"] < 300
    assert "files done" in proc.stderr and "chunks" in proc.stderr  # the big file's progress bar


def test_bench_ingest_bad_options_are_one_line(run_cli, assert_one_line_error, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    for args, message in (
        (["--small-files", "0"], "--small-files must be a whole number from 1 to 1000000, got 0"),
        (["--big-mb", "-1"], "--big-mb must be from 0 (none) to 10000, got -1"),
        (["--docs", str(tmp_path / "none")], "no such file or folder"),
        (["--docs", str(tmp_path / "empty"), "--small-files", "1"], "no file there that kb add reads"),
    ):
        assert_one_line_error(run_cli("bench", "ingest", *args, "--no-baseline", "--json"), message)
