"""BM25 over entries held in memory (`Postings`) and FTS5's tokenizer on texts that are not
stored (`Tokenizer`): the parts of the lexical index (`lexical.py`) that are not its file."""

from __future__ import annotations

import contextlib
import itertools
import math
import os
import sqlite3
import threading
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ech0_moe.owners import owner_of

TOKENIZER = "porter unicode61"
K1, B = 1.2, 0.75  # FTS5 bm25()'s constants
Keep = Callable[[dict[str, str]], bool]
LABEL_FIELDS = ("domain", "kind", "owner")  # what a search may filter on, kept per entry
Label = tuple[str, ...]


def label_of(meta: dict[str, Any]) -> Label:
    return (str(meta.get("domain", "")), str(meta.get("kind", "document")), owner_of(meta))


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
        self.labels: dict[tuple[str, ...], int] = {}  # (domain, kind, owner) -> label number
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
        labels = ["\x00".join(label) for label, _ in sorted(self.labels.items(), key=lambda x: x[1])]
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
                out.labels = {tuple(x.split("\x00")): n for n, x in enumerate(z["labels"].tolist())}
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

    def add(self, ids: Sequence[str], labels: Sequence[Label], keys: np.ndarray, groups: Groups) -> None:
        """Entries `ids` (replacing any live ones), which `groups` knows by `keys` (ascending, one
        per entry; a token of a row with no entry here is skipped)."""
        base = self.append(ids, labels)
        self.index(base, len(ids), keys, groups)

    def append(self, ids: Sequence[str], labels: Sequence[Label]) -> int:
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
        often as it is given, like FTS5's phrases) whose domain, kind and owner `keep` accepts."""
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
            allowed = np.array([keep(dict(zip(LABEL_FIELDS, label, strict=True))) for label in self.labels], bool)
            score[~allowed[self.label[: len(self.ids)]]] = 0.0
        hit = np.flatnonzero(score)
        if len(hit) > n:
            hit = hit[np.argpartition(-score[hit], n - 1)[:n]]
        hit = hit[np.argsort(-score[hit], kind="stable")]
        return [(self.ids[s], float(score[s])) for s in hit]
