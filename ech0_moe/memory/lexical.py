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
import itertools
import math
import os
import re
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ech0_moe.text import STOPWORDS

FILE = "lexical.sqlite3"
SNAPSHOT = "lexical-postings.npz"  # the postings as last read, for the next process's first search
TOKENIZER = "porter unicode61"
K1, B = 1.2, 0.75  # FTS5 bm25()'s constants
BATCH_CHARS = 2_000_000  # the token lists read and indexed at once when all the postings are read
# (about 300k token instances: a few common terms can hold most of a corpus's tokens)
_WORD = re.compile(r"\w+", re.UNICODE)

Keep = Callable[[dict[str, str]], bool]


def query_terms(text: str) -> list[str]:
    """The question's searchable words, lower-case, in order, without repeats or stopwords."""
    seen: dict[str, None] = {}
    for word in _WORD.findall(text.lower()):
        if word not in STOPWORDS:
            seen.setdefault(word, None)
    return list(seen)


Groups = list[tuple[str, str]]  # (term, the keys of the rows holding each instance of it, space-separated)
GROUP_TOKENS = "SELECT term, group_concat(doc, ' ') FROM {} GROUP BY term"  # one row per term, not per token


class Tokenizer:
    """FTS5's tokenizer on texts that are not stored: an in-memory FTS5 table written and rolled
    back, its tokens read through `fts5vocab`; the very terms the stored index holds."""

    def __init__(self) -> None:
        self._db = sqlite3.connect(":memory:", check_same_thread=False, isolation_level=None)
        self._db.execute(f"CREATE VIRTUAL TABLE scratch USING fts5(text, tokenize='{TOKENIZER}')")
        self._db.execute("CREATE VIRTUAL TABLE scratch_tokens USING fts5vocab(scratch, instance)")
        self._lock = threading.Lock()

    def __call__(self, texts: Sequence[str]) -> Groups:
        """The tokens of `texts`, keyed by each text's index."""
        with self._lock:
            self._db.execute("BEGIN")
            try:
                self._db.executemany("INSERT INTO scratch (rowid, text) VALUES (?, ?)", enumerate(texts))
                return self._db.execute(GROUP_TOKENS.format("scratch_tokens")).fetchall()
            finally:
                self._db.execute("ROLLBACK")


class Postings:
    """BM25 over entries held in memory: for each term the slots holding it and how often. An
    entry written again gets a new slot and its old one dies; dead slots are skipped until
    `worn` says a rebuild would pay."""

    def __init__(self) -> None:
        self.terms: dict[str, tuple[np.ndarray, np.ndarray]] = {}  # term -> (slots, frequencies)
        self.ids: list[str] = []  # slot -> entry id
        self.slot: dict[str, int] = {}  # entry id -> its live slot
        self.labels: dict[tuple[str, str], int] = {}  # (domain, kind) -> label number
        self.length = np.zeros(0, np.float32)  # tokens per slot
        self.alive = np.zeros(0, bool)
        self.label = np.zeros(0, np.int32)
        self.tokens = 0.0  # tokens of the live slots
        self.writes, self.file = -1, ""  # a snapshot's: the change counter it was saved at, of which file

    def save(self, path: Path, writes: int, file: str) -> bool:
        """A snapshot of freshly read postings (no dead slots), valid while the file's change
        counter is `writes`; not saved (silently) where the folder cannot be written."""
        if len(self.slot) != len(self.ids) or not self.ids:
            return False
        names = list(self.terms)
        sizes = np.array([len(self.terms[t][0]) for t in names], np.int64)
        labels = [f"{d}\x00{k}" for (d, k), _ in sorted(self.labels.items(), key=lambda x: x[1])]
        tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp.npz")
        with contextlib.suppress(OSError):
            np.savez(
                tmp,
                writes=np.array(writes),
                of_file=np.array(file),
                terms=np.array(names),
                sizes=sizes,
                slots=np.concatenate([self.terms[t][0] for t in names]) if names else np.zeros(0, np.int32),
                freqs=np.concatenate([self.terms[t][1] for t in names]) if names else np.zeros(0, np.float32),
                ids=np.array(self.ids),
                labels=np.array(labels),
                length=self.length[: len(self.ids)],
                label=self.label[: len(self.ids)],
            )
            tmp.replace(path)
            return True
        tmp.unlink(missing_ok=True)
        return False

    @classmethod
    def load(cls, path: Path) -> Postings | None:
        """The snapshot at `path` (its `writes`: the change counter it was saved at), or None."""
        try:
            with np.load(path, allow_pickle=False) as z:
                out = cls()
                out.writes, out.file = int(z["writes"]), str(z["of_file"])
                ends = np.cumsum(z["sizes"])
                slots, freqs = z["slots"], z["freqs"]
                starts = ends - z["sizes"]
                out.terms = {
                    t: (slots[a:b], freqs[a:b])
                    for t, a, b in zip(z["terms"].tolist(), starts.tolist(), ends.tolist(), strict=True)
                }
                out.ids = z["ids"].tolist()
                out.labels = {tuple(x.split("\x00", 1)): n for n, x in enumerate(z["labels"].tolist())}  # type: ignore[misc]
                out.length, out.label = z["length"].astype(np.float32), z["label"].astype(np.int32)
        except (OSError, KeyError, ValueError):
            return None
        out.slot = {i: n for n, i in enumerate(out.ids)}
        out.alive = np.ones(len(out.ids), bool)
        out.tokens = float(out.length.sum())
        return out

    @property
    def worn(self) -> bool:
        return len(self.ids) > 2 * len(self.slot) + 1000

    def remove(self, ids: Iterable[str]) -> None:
        for i in ids:
            if (s := self.slot.pop(i, None)) is not None:
                self.alive[s] = False
                self.tokens -= float(self.length[s])

    def add(self, ids: Sequence[str], labels: Sequence[tuple[str, str]], keys: np.ndarray, groups: Groups) -> None:
        """Entries `ids` (replacing any live ones), which `groups` knows by `keys` (ascending, one
        per entry; a token of a row with no entry here is skipped)."""
        base = self.append(ids, labels)
        self.index(base, len(ids), keys, groups)

    def append(self, ids: Sequence[str], labels: Sequence[tuple[str, str]]) -> int:
        """Slots for entries `ids` (replacing any live ones), no tokens yet; returns the first."""
        self.remove(ids)
        base, n = len(self.ids), len(ids)
        self.ids.extend(ids)
        self.slot.update((i, base + j) for j, i in enumerate(ids))
        if len(self.ids) > len(self.alive):  # grow by doubling
            grow = max(len(self.ids), 2 * len(self.alive)) - len(self.alive)
            self.length, self.alive, self.label = (
                np.concatenate([a, np.zeros(grow, a.dtype)]) for a in (self.length, self.alive, self.label)
            )
        self.length[base : base + n] = 0
        self.alive[base : base + n] = True
        self.label[base : base + n] = [self.labels.setdefault(tuple(x), len(self.labels)) for x in labels]
        return base

    def index(self, base: int, n: int, keys: np.ndarray, groups: Groups) -> None:
        """The tokens in `groups` of the `n` entries from slot `base` (known by `keys`); called
        once, or once per batch of terms (lengths add up)."""
        if not n or not groups:
            return
        # every token at once: (term, entry) pairs counted, then cut into one run per term
        counts = np.fromiter((h.count(" ") + 1 for _, h in groups), np.int64, len(groups))
        rows = np.fromstring(" ".join(h for _, h in groups), dtype=np.int64, sep=" ")  # empty when no tokens
        term = np.repeat(np.arange(len(groups)), counts)
        where = np.minimum(np.searchsorted(keys, rows), n - 1)
        held = keys[where] == rows
        pairs, freq = np.unique(term[held] * n + where[held], return_counts=True)
        term, entry = pairs // n, pairs % n
        length = np.bincount(entry, weights=freq, minlength=n).astype(np.float32)
        cuts = [0, *(np.flatnonzero(np.diff(term)) + 1).tolist(), len(pairs)] if len(pairs) else []
        for start, end in itertools.pairwise(cuts):
            name = groups[int(term[start])][0]
            slots, often = (entry[start:end] + base).astype(np.int32), freq[start:end].astype(np.float32)
            if (old := self.terms.get(name)) is not None:
                slots, often = np.concatenate([old[0], slots]), np.concatenate([old[1], often])
            self.terms[name] = (slots, often)
        self.length[base : base + n] += length
        self.tokens += float(length.sum())

    def search(self, terms: Iterable[str], n: int, keep: Keep | None = None) -> list[tuple[str, float]]:
        """The `n` best (id, BM25 score) of the live entries holding any of `terms` (each counted as
        often as it is given, like FTS5's phrases) whose domain and kind `keep` accepts."""
        rows = len(self.slot)
        if not rows:
            return []
        average = self.tokens / rows
        score = np.zeros(len(self.ids), np.float32)
        for t in terms:
            if (found := self.terms.get(t)) is None:
                continue
            live = self.alive[found[0]]
            slots, freq = found[0][live], found[1][live]
            if hits := len(slots):
                idf = max(math.log((rows - hits + 0.5) / (hits + 0.5)), 1e-6)
                score[slots] += idf * freq * (K1 + 1) / (freq + K1 * (1 - B + B * self.length[slots] / average))
        if keep is not None:
            allowed = np.array([keep({"domain": d, "kind": k}) for d, k in self.labels], bool)
            score[~allowed[self.label[: len(self.ids)]]] = 0.0
        hit = np.flatnonzero(score)
        if len(hit) > n:
            hit = hit[np.argpartition(-score[hit], n - 1)[:n]]
        hit = hit[np.argsort(-score[hit], kind="stable")]
        return [(self.ids[s], float(score[s])) for s in hit]


class LexicalIndex:
    """BM25 search over (id, text, domain, kind) rows: an FTS5 table keyed by rowid, and a table
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
                f"text, domain UNINDEXED, kind UNINDEXED, tokenize='{TOKENIZER}')"
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
        labels = [(str(m.get("domain", "")), str(m.get("kind", "document"))) for m in metadatas]
        with self._write():
            self._db.executemany("INSERT OR IGNORE INTO keys (id) VALUES (?)", [(i,) for i in ids])
            self._log(ids)
            rids = self._rids(ids)
            self._db.executemany("DELETE FROM passages WHERE rowid = ?", [(r,) for r in rids])  # replaced ones
            self._db.executemany(
                "INSERT INTO passages (rowid, text, domain, kind) VALUES (?, ?, ?, ?)",
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
                "SELECT k.id, p.text, p.domain, p.kind FROM keys k JOIN passages p ON p.rowid = k.rid "
                f"WHERE k.id IN ({','.join('?' * len(part))})",
                part,
            ).fetchall()
        if rows:
            postings.add(
                [r[0] for r in rows],
                [(r[2], r[3]) for r in rows],
                np.arange(len(rows)),
                self._tokenize([r[1] for r in rows]),
            )
        return postings

    def _read_all(self) -> Postings:
        writes, file = self._db.execute("SELECT n, file FROM writes").fetchone()
        entries = self._db.execute(
            "SELECT k.rid, k.id, p.domain, p.kind FROM keys k JOIN passages p ON p.rowid = k.rid ORDER BY k.rid"
        ).fetchall()
        postings = Postings()
        base = postings.append([e[1] for e in entries], [(e[2], e[3]) for e in entries])
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
        whose domain and kind `keep` accepts (all when None)."""
        terms = query_terms(query)
        if not terms:
            return []
        tokens = [t for t, holders in self._tokenize([" ".join(terms)]) for _ in holders.split()]
        with self._lock:
            return self._fresh_postings().search(tokens, n, keep)
