"""The lexical index on real SQLite files: BM25 in memory over FTS5's tokens, kept in step with
this process's writes and with other processes' (no model needed)."""

from __future__ import annotations

import random
import sqlite3
from pathlib import Path

import pytest

from ech0_moe.memory import lexical
from ech0_moe.memory.lexical import FILE, LexicalIndex, query_terms

WORDS = (
    "gasket valve pump seal torque flange bolt pressure boiler turbine rotor stator winding copper "
    "insulation coolant radiator piston crank bearing shaft gear clutch brake caliper rotor drum"
).split()


def corpus(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(5, 40))) for _ in range(n)]


def fill(index: LexicalIndex, texts: list[str], prefix: str = "e", kind: str = "document") -> list[str]:
    ids = [f"{prefix}{i}" for i in range(len(texts))]
    index.upsert(ids, texts, [{"domain": "engineering", "kind": kind}] * len(texts))
    return ids


def fts5_ranking(folder: Path, query: str, n: int) -> list[tuple[str, float]]:
    """FTS5's own bm25() ranking of the same file, the reference."""
    match = " OR ".join(f'"{t}"' for t in query_terms(query))
    with sqlite3.connect(folder / FILE) as db:
        sql = (
            "SELECT k.id, -rank FROM passages p JOIN keys k ON k.rid = p.rowid "
            "WHERE passages MATCH ? ORDER BY rank LIMIT ?"
        )
        return db.execute(sql, [match, n]).fetchall()


@pytest.mark.parametrize("query", ["gasket torque", "seal pressure boiler", "coolant", "copper winding stator bolts"])
def test_scores_match_fts5_bm25(tmp_path: Path, query: str) -> None:
    index = LexicalIndex(tmp_path)
    fill(index, corpus(300))
    got = index.search(query, 10)
    want = fts5_ranking(tmp_path, query, 10)
    assert [round(s, 3) for _, s in got] == [round(s, 3) for _, s in want]  # ids may differ only among ties


def test_postings_read_in_small_batches_score_the_same(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fill(LexicalIndex(tmp_path), corpus(300))
    whole = LexicalIndex(tmp_path).search("seal pressure boiler gasket", 20)
    (tmp_path / lexical.SNAPSHOT).unlink()
    monkeypatch.setattr(lexical, "BATCH_CHARS", 50)  # a term or two per batch
    assert LexicalIndex(tmp_path).search("seal pressure boiler gasket", 20) == whole


def test_follows_its_own_writes_replacements_and_deletions(tmp_path: Path) -> None:
    index = LexicalIndex(tmp_path)
    fill(index, corpus(50))
    assert index.search("xylophone", 5) == []  # the postings are now in memory
    index.upsert(["new"], ["a xylophone gasket"], [{"domain": "music", "kind": "learned"}])
    assert [i for i, _ in index.search("xylophone", 5)] == ["new"]
    index.upsert(["new"], ["a marimba now"], [{"domain": "music", "kind": "learned"}])  # replaced
    assert index.search("xylophone", 5) == [] and [i for i, _ in index.search("marimba", 5)] == ["new"]
    index.delete(["new"])
    assert index.search("marimba", 5) == []
    assert [round(s, 3) for _, s in index.search("gasket", 5)] == [
        round(s, 3) for _, s in fts5_ranking(tmp_path, "gasket", 5)
    ]


def test_keep_filters_by_domain_and_kind(tmp_path: Path) -> None:
    index = LexicalIndex(tmp_path)
    fill(index, corpus(40))
    fill(index, ["the gasket answer"] * 3, prefix="learned", kind="learned")
    only_learned = index.search("gasket", 10, keep=lambda m: m["kind"] == "learned")
    assert {i for i, _ in only_learned} == {"learned0", "learned1", "learned2"}
    assert index.search("gasket", 10, keep=lambda m: m["domain"] == "law") == []


def test_sees_another_process_write(tmp_path: Path) -> None:
    index, other = LexicalIndex(tmp_path), LexicalIndex(tmp_path)
    fill(index, corpus(20))
    assert index.search("zeppelin", 3) == []
    other.upsert(["z"], ["zeppelin gasket"], [{"domain": "", "kind": "document"}])
    assert [i for i, _ in index.search("zeppelin", 3)] == ["z"]
    other.delete(["z"])
    assert index.search("zeppelin", 3) == []


def test_many_rewrites_rebuild_instead_of_growing(tmp_path: Path) -> None:
    index = LexicalIndex(tmp_path)
    texts = corpus(10)
    index.search("gasket", 1)
    for _ in range(300):
        fill(index, texts)
    assert index.count() == 10 and len(index.search("gasket", 20)) <= 10
    postings = index._postings
    assert postings is not None and len(postings.ids) == 10  # read anew once dead slots outnumbered live ones


class _FailingCommit:
    """The index's connection, except that COMMIT fails the way a full disk makes it fail."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def execute(self, sql: str, *args: object) -> sqlite3.Cursor:
        if sql == "COMMIT":
            raise sqlite3.OperationalError("database or disk is full")
        return self.db.execute(sql, *args)

    def __getattr__(self, name: str) -> object:
        return getattr(self.db, name)


def test_a_failed_commit_rolls_back_and_the_postings_forget_the_write(tmp_path: Path) -> None:
    index = LexicalIndex(tmp_path)
    fill(index, corpus(20))
    assert index.search("zeppelin", 3) == []  # the postings are in memory
    real = index._db
    index._db = _FailingCommit(real)  # type: ignore[assignment]
    with pytest.raises(sqlite3.OperationalError, match="disk is full"):
        index.upsert(["z"], ["zeppelin gasket"], [{"domain": "", "kind": "document"}])
    index._db = real
    assert not real.in_transaction and index.count() == 20
    assert index.search("zeppelin", 3) == []  # neither the file nor memory holds the failed write


def test_a_new_process_starts_from_the_snapshot_brought_up_to_date(tmp_path: Path) -> None:
    """The first search saves the postings beside the file; another connection's writes after it
    are applied from the change log; a recreated file never uses an old snapshot."""
    from ech0_moe.memory.lexical import SNAPSHOT

    first = LexicalIndex(tmp_path)
    fill(first, corpus(300))
    assert first.search("gasket valve", 5)
    assert (tmp_path / SNAPSHOT).is_file()
    writer = LexicalIndex(tmp_path)  # another process, in effect
    writer.upsert(["new"], ["zirconium gasket"], [{"domain": "", "kind": "document"}])
    writer.delete(["e0"])
    fresh = LexicalIndex(tmp_path)
    found = dict(fresh.search("zirconium", 3))
    assert list(found) == ["new"] and "e0" not in dict(fresh.search(" ".join(WORDS), 400))
    got, want = fresh.search("pump torque", 10), fts5_ranking(tmp_path, "pump torque", 10)
    assert [round(s, 3) for _, s in got] == [round(s, 3) for _, s in want]  # the same BM25 as a full read
    for index in (first, writer, fresh):
        index.close()
    (tmp_path / FILE).unlink()  # a new, empty file: the snapshot is of another file
    empty = LexicalIndex(tmp_path)
    assert empty.search("gasket", 5) == []


def test_fusion_trusts_bm25_for_a_question_in_the_passages_words() -> None:
    from ech0_moe.memory import ranking

    passage = "Set the POSIXLY_CORRECT environment variable for closer conformance to POSIX."
    held = query_terms(passage)
    own_words = ranking.lexical_share(
        query_terms("Which environment variable gives closer conformance to POSIX?"), held
    )
    paraphrase = ranking.lexical_share(
        query_terms("How do I make the tools behave like the portable standard says?"), held
    )
    assert own_words > 0.6 > paraphrase >= ranking.LEXICAL_SHARE
    similarity, bm25 = {"bm25-leader": 0.50, "dense-leader": 0.70}, {"bm25-leader": 9.0, "dense-leader": 1.0}
    trusted = ranking.relevance(similarity, bm25, own_words)
    assert max(trusted, key=trusted.get) == "bm25-leader"
    doubted = ranking.relevance(similarity, bm25, 0.3)
    assert max(doubted, key=doubted.get) == "dense-leader"
    assert ranking.relevance({"only": 0.4}, {}, 0.5) == {"only": 0.0}
