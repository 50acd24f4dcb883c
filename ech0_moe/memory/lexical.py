"""The knowledge base's lexical index: BM25 over every entry's text, beside Chroma's vectors.

SQLite's FTS5 (in Python's standard library; Porter stemming over unicode61 tokens) in one
file, `lexical.sqlite3`, in the knowledge-base folder: transactional like Chroma's own SQLite,
so a kill mid-ingest leaves it whole, and `KnowledgeBase` re-aligns it with Chroma when the
two disagree (an entry written to one and not yet to the other). Names, numbers and rare terms
find their passage here even when the embedding does not.

Searches score FTS5's own tokens (read back through `fts5vocab`) with FTS5's BM25 formula in
numpy, from postings held in memory: FTS5's `ORDER BY rank` calls `bm25()` once per matching
row, 9 ms at 10k entries when the question's words are common, against well under 1 ms here.
The postings are read from the file on the first search (0.3 s per 10k entries), follow this
process's own writes, and are read anew when another process has written the file.
"""

from __future__ import annotations

import contextlib
import os
import re
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ech0_moe.memory.postings import GROUP_TOKENS, TOKENIZER, Groups, Keep, Postings, Tokenizer, label_of
from ech0_moe.text import STOPWORDS

FILE = "lexical.sqlite3"
SNAPSHOT = "lexical-postings.npz"  # the postings as last read, for the next process's first search
BATCH_CHARS = 2_000_000  # the token lists read and indexed at once when all the postings are read
# (about 300k token instances: a few common terms can hold most of a corpus's tokens)
_WORD = re.compile(r"\w+", re.UNICODE)


def query_terms(text: str) -> list[str]:
    """The question's searchable words, lower-case, in order, without repeats or stopwords."""
    seen: dict[str, None] = {}
    for word in _WORD.findall(text.lower()):
        if word not in STOPWORDS:
            seen.setdefault(word, None)
    return list(seen)


class LexicalIndex:
    """BM25 search over (id, text, domain, kind, owner) rows: an FTS5 table keyed by rowid, and a table
    from entry id to that rowid (FTS5 finds a row by rowid at once; by an unindexed id column it
    reads every row, which made each upsert cost a scan of the whole index)."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / FILE
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._lock = threading.Lock()
        self._tokenize = Tokenizer()
        self._postings: Postings | None = None  # read on the first search
        self._version = -1  # the file's data_version the postings reflect
        with self._write(change=False):
            # the first layout (one FTS5 table with an id column) is dropped: KnowledgeBase refills
            # the index from Chroma when their counts differ
            self._db.execute("DROP TABLE IF EXISTS entries")
            # the second (no owner column) too: the refill from Chroma writes every entry's owner
            columns = [r[1] for r in self._db.execute("PRAGMA table_info(passages)")]
            if columns and "owner" not in columns:
                for table in ("passages", "keys", "writes", "changed"):  # a new file name: old snapshots unused
                    self._db.execute(f"DROP TABLE IF EXISTS {table}")
            self._db.execute("CREATE TABLE IF NOT EXISTS keys (rid INTEGER PRIMARY KEY, id TEXT UNIQUE NOT NULL)")
            # one row: a change counter, and this file's own random name (a snapshot names the file it was of)
            self._db.execute("CREATE TABLE IF NOT EXISTS writes (n INTEGER NOT NULL, file TEXT NOT NULL)")
            self._db.execute(
                "INSERT INTO writes SELECT 0, ? WHERE NOT EXISTS (SELECT 1 FROM writes)", (os.urandom(8).hex(),)
            )
            # the entries each change touched, so a snapshot of older postings can be brought up to date
            self._db.execute("CREATE TABLE IF NOT EXISTS changed (n INTEGER NOT NULL, id TEXT NOT NULL)")
            self._db.execute("CREATE INDEX IF NOT EXISTS changed_n ON changed (n)")
            self._db.execute(
                "CREATE VIRTUAL TABLE IF NOT EXISTS passages USING fts5("
                f"text, domain UNINDEXED, kind UNINDEXED, owner UNINDEXED, tokenize='{TOKENIZER}')"
            )
        self._db.execute("CREATE VIRTUAL TABLE IF NOT EXISTS temp.tokens USING fts5vocab(main, passages, instance)")

    @contextlib.contextmanager
    def _write(self, change: bool = True) -> Iterator[None]:
        """One transaction under the lock: committed whole, or rolled back whole (and the postings,
        which may already hold the change, read anew)."""
        with self._lock:
            self._db.execute("BEGIN")
            try:
                yield
                if change:  # snapshots of older postings no longer match
                    self._db.execute("UPDATE writes SET n = n + 1")
                self._db.execute("COMMIT")  # fails on a full disk, too
            except BaseException:
                if self._db.in_transaction:  # SQLite may have rolled back by itself
                    self._db.execute("ROLLBACK")
                self._postings = None
                raise

    def close(self) -> None:
        self._db.close()

    def count(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT count(*) FROM keys").fetchone()[0])

    def ids(self) -> set[str]:
        with self._lock:
            return {row[0] for row in self._db.execute("SELECT id FROM keys")}

    def _rids(self, ids: Iterable[str]) -> list[int]:
        found = (self._db.execute("SELECT rid FROM keys WHERE id = ?", (i,)).fetchone() for i in ids)
        return [row[0] for row in found if row is not None]

    def upsert(self, ids: Sequence[str], texts: Sequence[str], metadatas: Sequence[dict[str, Any]]) -> None:
        """Write (or replace) entries in one transaction."""
        labels = [label_of(m) for m in metadatas]
        with self._write():
            self._db.executemany("INSERT OR IGNORE INTO keys (id) VALUES (?)", [(i,) for i in ids])
            self._log(ids)
            rids = self._rids(ids)
            self._db.executemany("DELETE FROM passages WHERE rowid = ?", [(r,) for r in rids])  # replaced ones
            self._db.executemany(
                "INSERT INTO passages (rowid, text, domain, kind, owner) VALUES (?, ?, ?, ?, ?)",
                [(rid, t, *label) for rid, t, label in zip(rids, texts, labels, strict=True)],
            )
            if self._postings is not None:
                self._postings.add(ids, labels, np.arange(len(ids)), self._tokenize(texts))

    def delete(self, ids: Iterable[str]) -> None:
        ids = list(ids)
        with self._write():
            self._db.executemany("DELETE FROM passages WHERE rowid = ?", [(r,) for r in self._rids(ids)])
            self._db.executemany("DELETE FROM keys WHERE id = ?", [(i,) for i in ids])
            self._log(ids)
            if self._postings is not None:
                self._postings.remove(ids)

    def save_snapshot(self) -> None:
        """After a big write (`kb add`): save the postings for the next process's first search,
        unless the snapshot there is close enough to be brought up to date on the way; then let
        them go (a search reads the snapshot back in 0.1 s at 50k entries), so a further `kb add`
        in this process does not keep every chunk's postings in memory as well."""
        with self._lock:
            self._postings = None
            self._fresh_postings()
            self._postings = None

    def _log(self, ids: Sequence[str]) -> None:
        """Record that the change being written (the counter's next value) touches `ids`."""
        self._db.executemany("INSERT INTO changed SELECT n + 1, ? FROM writes", [(i,) for i in ids])

    def _fresh_postings(self) -> Postings:
        """The postings, read when there are none yet, when another process has written the file
        since, or when dead slots outnumber live ones: from the snapshot beside the file brought
        up to date with the entries changed since it was saved (50k entries: 0.1 s), or when
        there is none (or it is far behind) from the file (1.5 s), then saved as the snapshot."""
        version = self._db.execute("PRAGMA data_version").fetchone()[0]
        if self._postings is None or version != self._version or self._postings.worn:
            self._postings = self._from_snapshot() or self._read_all()
            self._version = version
        return self._postings

    def _from_snapshot(self) -> Postings | None:
        postings = Postings.load(self.path.with_name(SNAPSHOT))
        writes, file = self._db.execute("SELECT n, file FROM writes").fetchone()
        if postings is None or postings.file != file or postings.writes > writes:
            return None
        changed = [r[0] for r in self._db.execute("SELECT DISTINCT id FROM changed WHERE n > ?", (postings.writes,))]
        if len(changed) > max(1000, len(postings.slot) // 10):  # far behind: read the whole file instead
            return None
        postings.remove(changed)
        rows = []
        for start in range(0, len(changed), 500):
            part = changed[start : start + 500]
            rows += self._db.execute(
                "SELECT k.id, p.text, p.domain, p.kind, p.owner FROM keys k JOIN passages p ON p.rowid = k.rid "
                f"WHERE k.id IN ({','.join('?' * len(part))})",
                part,
            ).fetchall()
        if rows:
            postings.add(
                [r[0] for r in rows],
                [tuple(r[2:5]) for r in rows],
                np.arange(len(rows)),
                self._tokenize([r[1] for r in rows]),
            )
        return postings

    def _read_all(self) -> Postings:
        writes, file = self._db.execute("SELECT n, file FROM writes").fetchone()
        entries = self._db.execute(
            "SELECT k.rid, k.id, p.domain, p.kind, p.owner FROM keys k JOIN passages p ON p.rowid = k.rid "
            "ORDER BY k.rid"
        ).fetchall()
        postings = Postings()
        base = postings.append([e[1] for e in entries], [tuple(e[2:5]) for e in entries])
        keys = np.array([e[0] for e in entries], np.int64)
        batch: Groups = []
        size = 0
        for term, holders in self._db.execute(GROUP_TOKENS.format("temp.tokens")):  # 50k entries: ~10M tokens
            batch.append((term, holders))
            size += len(holders)
            if size >= BATCH_CHARS:
                postings.index(base, len(entries), keys, batch)
                batch, size = [], 0
        postings.index(base, len(entries), keys, batch)
        if postings.save(self.path.with_name(SNAPSHOT), writes, file):  # (under self._lock, from search)
            with contextlib.suppress(sqlite3.Error):  # older than any snapshot: not needed again
                self._db.execute("DELETE FROM changed WHERE n <= ?", (writes,))
        return postings

    def search(self, query: str, n: int, keep: Keep | None = None) -> list[tuple[str, float]]:
        """Up to `n` (id, BM25 score; higher is better) for entries sharing a word with `query`
        whose domain, kind and owner `keep` accepts (all when None)."""
        terms = query_terms(query)
        if not terms:
            return []
        tokens = [t for t, holders in self._tokenize([" ".join(terms)]) for _ in holders.split()]
        with self._lock:
            return self._fresh_postings().search(tokens, n, keep)
