"""The knowledge base's lexical index: BM25 over every entry's text, beside Chroma's vectors.

SQLite's FTS5 (in Python's standard library; Porter stemming over unicode61 tokens) in one
file, `lexical.sqlite3`, in the knowledge-base folder: transactional like Chroma's own SQLite,
so a kill mid-ingest leaves it whole, and `KnowledgeBase` re-aligns it with Chroma when the
two disagree (an entry written to one and not yet to the other). Names, numbers and rare terms
find their passage here even when the embedding does not.
"""

from __future__ import annotations

import contextlib
import re
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

FILE = "lexical.sqlite3"
_WORD = re.compile(r"\w+", re.UNICODE)
# words too common to say which passage a question is about (FTS5 ranks them low anyway; dropping
# them keeps the OR query short)
STOPWORDS = frozenset(
    "a an and are as at be by can did do does for from had has have how i if in into is it its of on or "
    "that the their there these this to was were what when where which who whom whose why will with "
    "would you your".split()
)


def query_terms(text: str) -> list[str]:
    """The question's searchable words, lower-case, in order, without repeats or stopwords."""
    seen: dict[str, None] = {}
    for word in _WORD.findall(text.lower()):
        if word not in STOPWORDS:
            seen.setdefault(word, None)
    return list(seen)


class LexicalIndex:
    """BM25 search over (id, text, domain, kind) rows: an FTS5 table keyed by rowid, and a table
    from entry id to that rowid (FTS5 finds a row by rowid at once; by an unindexed id column it
    reads every row, which made each upsert cost a scan of the whole index)."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / FILE
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._lock = threading.Lock()
        with self._write():
            # the first layout (one FTS5 table with an id column) is dropped: KnowledgeBase refills
            # the index from Chroma when their counts differ
            self._db.execute("DROP TABLE IF EXISTS entries")
            self._db.execute("CREATE TABLE IF NOT EXISTS keys (rid INTEGER PRIMARY KEY, id TEXT UNIQUE NOT NULL)")
            self._db.execute(
                "CREATE VIRTUAL TABLE IF NOT EXISTS passages USING fts5("
                "text, domain UNINDEXED, kind UNINDEXED, tokenize='porter unicode61')"
            )

    @contextlib.contextmanager
    def _write(self) -> Iterator[None]:
        """One transaction under the lock: committed whole, or rolled back whole."""
        with self._lock:
            self._db.execute("BEGIN")
            try:
                yield
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

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
        with self._write():
            self._db.executemany("INSERT OR IGNORE INTO keys (id) VALUES (?)", [(i,) for i in ids])
            rids = self._rids(ids)
            self._db.executemany("DELETE FROM passages WHERE rowid = ?", [(r,) for r in rids])  # replaced ones
            self._db.executemany(
                "INSERT INTO passages (rowid, text, domain, kind) VALUES (?, ?, ?, ?)",
                [
                    (rid, t, str(m.get("domain", "")), str(m.get("kind", "document")))
                    for rid, t, m in zip(rids, texts, metadatas, strict=True)
                ],
            )

    def delete(self, ids: Iterable[str]) -> None:
        ids = list(ids)
        with self._write():
            self._db.executemany("DELETE FROM passages WHERE rowid = ?", [(r,) for r in self._rids(ids)])
            self._db.executemany("DELETE FROM keys WHERE id = ?", [(i,) for i in ids])

    def search(
        self, query: str, n: int, keep: Callable[[dict[str, str]], bool] | None = None
    ) -> list[tuple[str, float]]:
        """Up to `n` (id, BM25 score; higher is better) for entries sharing a word with `query`
        whose domain and kind `keep` accepts (all when None)."""
        terms = query_terms(query)
        if not terms:
            return []
        match = " OR ".join('"' + t.replace('"', '""') + '"' for t in terms)
        out: list[tuple[int, float]] = []
        with self._lock:
            # filtered while reading the top of the ranking: a filter in SQL makes FTS5 rank every match
            sql = "SELECT rowid, rank, domain, kind FROM passages WHERE passages MATCH ? ORDER BY rank LIMIT ?"
            for rid, rank, domain, kind in self._db.execute(sql, [match, n * (4 if keep else 1)]):
                if keep is None or keep({"domain": domain, "kind": kind}):
                    out.append((rid, -float(rank)))
                    if len(out) == n:
                        break
            names = dict(
                self._db.execute(
                    f"SELECT rid, id FROM keys WHERE rid IN ({','.join('?' * len(out))})", [r for r, _ in out]
                )
            )
        return [(names[rid], score) for rid, score in out if rid in names]
