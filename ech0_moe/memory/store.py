"""The store under a knowledge base: a persistent Chroma collection and the BM25 index of the
same entries beside it (`lexical.py`), in one folder, under one folder lock (`lock.py`).

Chroma runs embedded (`PersistentClient`, telemetry off) with cosine distance and our offline
MiniLM embedding function. Every write is committed by Chroma (then by the lexical index)
before the call returns, so a crash later loses nothing already written; `delete` removes from
both indexes, and on open the lexical index is aligned with Chroma (the reference).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import re
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from chromadb.api.types import Documents, EmbeddingFunction, Embeddings

from ech0_moe.embeddings import DIM, MODEL_NAME, embed
from ech0_moe.errors import Ech0Error, KnowledgeBaseError
from ech0_moe.memory.lexical import LexicalIndex
from ech0_moe.memory.lock import FolderLock
from ech0_moe.memory.probe import check_index
from ech0_moe.owners import owner_of

COLLECTION = "ech0_memory"
PAGE = 5000  # entries read or deleted per call
READ_ONLY_COPY_BYTES = 1_000_000_000  # a store that cannot be written is searched from a copy up to this size


class MiniLMEmbeddingFunction(EmbeddingFunction[Documents]):
    """Chroma embedding function backed by the offline MiniLM (Chroma never loads its own)."""

    def __init__(self) -> None:
        pass

    def __call__(self, input: Documents) -> Embeddings:
        return list(embed(list(input)))

    @staticmethod
    def name() -> str:
        return "ech0-minilm"

    def get_config(self) -> dict[str, Any]:
        return {"model": MODEL_NAME}

    @staticmethod
    def build_from_config(config: dict[str, Any]) -> MiniLMEmbeddingFunction:
        return MiniLMEmbeddingFunction()

    def default_space(self) -> str:  # type: ignore[override]
        return "cosine"


def wanted_by(
    domain: str | None, kind: str | None, owners: tuple[str, ...] | None = None
) -> Callable[[dict[str, Any]], bool]:
    """Whether an entry's metadata is of `domain` (or of every domain), of `kind` and of one of `owners`
    (None: any owner)."""
    return lambda meta: (
        (not domain or meta.get("domain", "") in (domain, ""))
        and (not kind or meta.get("kind", "document") == kind)
        and (owners is None or owner_of(meta) in owners)
    )


def content_id(text: str, source: str = "") -> str:
    """Stable id from content: re-adding the same chunk is a no-op."""
    return hashlib.sha256(f"{source}\x00{text}".encode()).hexdigest()[:32]


_UNWRITABLE = re.compile(r"readonly database|disk is full|[Rr]ead-only file system|No space left on device")


def _drop_client(folder: Path) -> None:
    """Forget Chroma's per-folder client after a failed open (it caches the half-started one)."""
    from chromadb.api.shared_system_client import SharedSystemClient

    SharedSystemClient._identifier_to_system.pop(str(folder), None)
    SharedSystemClient._identifier_to_refcount.pop(str(folder), None)


F = TypeVar("F", bound=Callable[..., Any])


def _one_line(self: Store, fn: Callable[[], Any]) -> Any:
    """Run `fn`, turning whatever Chroma, SQLite or the file system raise into one `KnowledgeBaseError` line."""
    try:
        return fn()
    except Ech0Error:
        raise
    except Exception as exc:  # chromadb.errors.*, sqlite3.*, OSError: the store's own types
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise KnowledgeBaseError(f"knowledge base {self.path}: {first}") from None


def store_op(*, writes: bool) -> Callable[[F], F]:
    """One store operation (a method, or a function whose first argument is the store): one line
    on failure, and serialised with every other process using the same folder."""

    def wrap(fn: F) -> F:
        @functools.wraps(fn)
        def inner(self: Store, *args: Any, **kwargs: Any) -> Any:
            with self._exclusive(writes):
                return _one_line(self, lambda: fn(self, *args, **kwargs))

        return inner  # type: ignore[return-value]

    return wrap


class Store:
    """Chroma plus the lexical index in one folder; every operation under the folder lock."""

    def __init__(self, path: str | os.PathLike[str], collection: str = COLLECTION) -> None:
        self.path = Path(path)
        self.collection = collection
        self.lock = FolderLock(self.path)
        self.lexical: LexicalIndex | None = None
        self.read_only = ""  # why the folder cannot be written; "" when it can
        self.store = self.path  # the folder Chroma and the lexical index open (a snapshot when read-only)
        self.spent: Counter[str] = Counter()  # seconds in: chroma (writes), lexical (writes), lock (waiting)
        _one_line(self, self._open)

    def _open(self) -> None:
        import chromadb
        from chromadb.config import Settings

        database = self.path / "chroma.sqlite3"
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryFile(dir=self.path):  # a name of its own: processes open a folder at once
                pass
        except OSError as exc:
            if not database.is_file():
                raise KnowledgeBaseError(f"knowledge base folder {self.path} is not writable: {exc.strerror}") from None
            self.read_only = exc.strerror or "not writable"
        if database.exists() and database.stat().st_size == 0:  # Chroma would silently start a new, empty store
            raise KnowledgeBaseError(
                f"knowledge base {self.path}: chroma.sqlite3 is empty (0 bytes), not a store; "
                "move the folder away to start a new one"
            )
        check_index(self.path, self.collection, DIM)  # a damaged saved index would crash Chroma's reader
        settings = Settings(anonymized_telemetry=False, allow_reset=False)
        with self._exclusive(writes=False, fresh=False):
            if not self.read_only:
                try:
                    return self._connect(chromadb.PersistentClient, settings)
                except Exception as exc:
                    _drop_client(self.store)
                    if not (found := _UNWRITABLE.search(str(exc))):
                        raise
                    if self.lexical is not None:  # opened in the folder before the failure
                        self.lexical.close()
                    self.read_only, self.lexical = found.group(0), None
            # Chroma cannot open a store it may not write (read-only folder, full disk): searches
            # read a private copy, and writes are refused with one line
            size = sum(f.stat().st_size for f in self.path.rglob("*") if f.is_file())
            room = shutil.disk_usage(tempfile.gettempdir()).free
            if size > min(READ_ONLY_COPY_BYTES, room // 2):
                raise KnowledgeBaseError(
                    f"knowledge base {self.path} cannot be written ({self.read_only}), and at "
                    f"{size / 1e6:.0f}MB it is too large to search from a copy in {tempfile.gettempdir()}"
                )
            self._snapshot = tempfile.TemporaryDirectory(prefix="ech0-kb-read-only-")
            self.store = Path(self._snapshot.name) / "kb"
            shutil.copytree(self.path, self.store, ignore=shutil.ignore_patterns(".ech0*"))
            self._connect(chromadb.PersistentClient, settings)

    def _connect(self, client: Callable[..., Any], settings: Any) -> None:
        self._client = client(path=str(self.store), settings=settings)
        self._factory, self._settings = client, settings
        self.col = self._client.get_or_create_collection(
            self.collection,
            embedding_function=MiniLMEmbeddingFunction(),  # type: ignore[arg-type]
            configuration={"hnsw": {"space": "cosine"}},
        )
        self.lock.seen = self.lock.generation()
        if self.lexical is None:
            self.lexical = LexicalIndex(self.store)
        self._align()

    def _align(self) -> None:
        """Make the lexical index hold exactly Chroma's entries (a kill between the two writes, or
        a store made before the index existed, leaves them apart; Chroma is the reference). Entries
        stored before owners existed get theirs written (`owners.owner_of`) on the way."""
        lexical = self._lexical
        if lexical.count() == self.col.count():
            return
        ours, theirs = set(self.col.get(include=[])["ids"]), lexical.ids()
        if theirs - ours:
            lexical.delete(theirs - ours)
        missing = sorted(ours - theirs)
        for start in range(0, len(missing), 1000):
            got = self.col.get(ids=missing[start : start + 1000], include=["documents", "metadatas"])
            metas = [dict(m or {}) for m in got["metadatas"] or []]
            unowned = [i for i, m in enumerate(metas) if "owner" not in m]
            for i in unowned:
                metas[i]["owner"] = owner_of(metas[i])
            if unowned:
                self.col.update(ids=[got["ids"][i] for i in unowned], metadatas=[metas[i] for i in unowned])  # type: ignore[misc]
            lexical.upsert(got["ids"], got["documents"] or [], metas)

    @property
    def _lexical(self) -> LexicalIndex:
        assert self.lexical is not None, "opened in _connect"
        return self.lexical

    def check_writable(self) -> None:
        """A `KnowledgeBaseError` when this store cannot be written (a read-only folder, a full disk)."""
        if self.read_only:
            raise KnowledgeBaseError(
                f"knowledge base {self.path} cannot be written ({self.read_only}): nothing was stored"
            )

    @contextlib.contextmanager
    def _exclusive(self, writes: bool, fresh: bool = True) -> Iterator[None]:
        if writes:
            self.check_writable()
        t = time.perf_counter()
        with self.lock.hold(shared=bool(self.read_only)) as outermost:
            self.spent["lock"] += time.perf_counter() - t
            if fresh and outermost and not self.read_only and self.lock.generation() != self.lock.seen:
                self._client.close()  # another process wrote: read the store anew
                self._connect(self._factory, self._settings)
            yield
            if writes and outermost:  # one generation bump per outermost write, however many it nests
                self.lock.seen = self.lock.generation() + 1
                _one_line(self, self.lock.bump)

    @store_op(writes=False)
    def count(self) -> int:
        return self.col.count()

    @store_op(writes=True)
    def upsert(
        self,
        ids: list[str],
        texts: list[str],
        metadatas: list[dict[str, Any]],
        embeddings: np.ndarray | None = None,
    ) -> None:
        """Write entries to both indexes (committed when this returns); embeddings default to the texts'."""
        if ids:
            t = time.perf_counter()
            step = self._client.get_max_batch_size()  # Chroma refuses bigger calls (5,461 here)
            for i in range(0, len(ids), step):
                part = slice(i, i + step)
                vectors = None if embeddings is None else embeddings[part]
                self.col.upsert(ids=ids[part], documents=texts[part], metadatas=metadatas[part], embeddings=vectors)  # type: ignore[arg-type]
            t2 = time.perf_counter()
            self._lexical.upsert(ids, texts, metadatas)
            self.spent["chroma"] += t2 - t
            self.spent["lexical"] += time.perf_counter() - t2

    @store_op(writes=False)
    def snapshot_lexical(self) -> None:
        """Save the lexical postings for the next process (`LexicalIndex.save_snapshot`)."""
        t = time.perf_counter()
        self._lexical.save_snapshot()
        self.spent["lexical"] += time.perf_counter() - t

    @store_op(writes=True)
    def delete(self, ids: Iterable[str]) -> int:
        """Remove entries from both indexes (ids that are not there are ignored); how many were there."""
        wanted = sorted(set(ids))
        existing: list[str] = []
        for start in range(0, len(wanted), PAGE):  # SQLite allows so many variables in one statement
            existing += self.col.get(ids=wanted[start : start + PAGE], include=[])["ids"]
        for start in range(0, len(existing), PAGE):
            self.col.delete(ids=existing[start : start + PAGE])
        if existing:
            self._lexical.delete(existing)
        return len(existing)

    def entries(self, where: dict[str, Any] | None = None) -> Iterator[tuple[str, dict[str, Any]]]:
        """(id, metadata) of every entry `where` matches, a page at a time: one `get` of more than
        about 30k entries is too many SQL variables for Chroma's SQLite."""
        for got in self._pages(where, ["metadatas"]):
            yield from zip(got["ids"], (m or {} for m in got["metadatas"] or []), strict=True)

    def ids(self, where: dict[str, Any]) -> Iterator[str]:
        """The id of every entry `where` matches, a page at a time (no metadata read)."""
        for got in self._pages(where, []):
            yield from got["ids"]

    def _pages(self, where: dict[str, Any] | None, include: list[Any]) -> Iterator[Any]:
        start = 0
        while True:
            got = self.col.get(where=where, include=include, limit=PAGE, offset=start)
            yield got
            if len(got["ids"]) < PAGE:
                return
            start += PAGE
