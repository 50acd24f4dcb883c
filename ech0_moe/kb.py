"""The knowledge base: documents and learned answers in a persistent Chroma collection,
with a BM25 index of the same entries beside it (`lexical.py`).

Chroma runs embedded (`PersistentClient`, telemetry off) with cosine distance
and our offline MiniLM embedding function. Every write is committed by Chroma
(then by the lexical index) before the call returns, so a crash later loses nothing
already written. Search fuses both rankings (reciprocal rank fusion), then picks
diverse passages (Maximal Marginal Relevance).
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import os
import re
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from chromadb.api.types import Documents, EmbeddingFunction, Embeddings

from ech0_moe.embeddings import MODEL_NAME, embed
from ech0_moe.errors import Ech0Error
from ech0_moe.lexical import LexicalIndex
from ech0_moe.text import chunk_text

os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")

COLLECTION = "ech0_memory"
READ_ONLY_COPY_BYTES = 1_000_000_000  # a store that cannot be written is searched from a copy up to this size
MAX_FILE_BYTES = 20_000_000  # `kb add` skips larger files unless asked (--max-file-mb)
TEXT_SUFFIXES = frozenset({".md", ".markdown", ".txt", ".rst", ".text"})
_NUMBERS = re.compile(r"\d+(?:\.\d+)?")
SEARCH_METHODS = ("fused", "dense", "lexical")
RRF_K = 60  # reciprocal rank fusion: 1 / (RRF_K + rank), summed over the rankings that hold a passage
# a passage the lexical index finds may be this much further (cosine, as a multiple of max_distance)
# than the dense threshold: its words matched where the embedding did not (names, numbers, rare terms)
LEXICAL_REACH = 1.4
# the BM25 ranking's weight in the fusion (the dense ranking's is 1): MiniLM truncates and blurs
# names and numbers that BM25 matches exactly (tuned on benchmarks/qa.jsonl; on the held-out
# qa-heldout.jsonl recall@1 went from 0.80 to 0.90 with RANK_SHARE below)
LEXICAL_WEIGHT = 1.5
# MMR's relevance: this share from the fused ranks (spread over [0, 1]), the rest from the cosine
# similarity (a learned answer to the same question is much closer than any document; ranks alone
# would hide that)
RANK_SHARE = 0.75


@dataclass(frozen=True)
class Passage:
    """A retrieved passage (document chunk or learned answer) with its provenance."""

    id: str
    text: str
    source: str
    kind: str  # "document" | "learned"
    score: float  # 1 - cosine distance
    domain: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


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


def _wanted(domain: str | None, kind: str | None) -> Callable[[dict[str, Any]], bool]:
    """Whether an entry's metadata is of `domain` (or of every domain) and of `kind`."""
    return lambda meta: (
        (not domain or meta.get("domain", "") in (domain, "")) and (not kind or meta.get("kind", "document") == kind)
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


class KnowledgeBaseError(Ech0Error):
    """The store cannot be read or written (damaged files, full disk): the graph answers without it."""


F = TypeVar("F", bound=Callable[..., Any])


def _one_line(self: KnowledgeBase, fn: Callable[[], Any]) -> Any:
    """Run `fn`, turning whatever Chroma, SQLite or the file system raise into one `KnowledgeBaseError` line."""
    try:
        return fn()
    except Ech0Error:
        raise
    except Exception as exc:  # chromadb.errors.*, sqlite3.*, OSError: the store's own types
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise KnowledgeBaseError(f"knowledge base {self.path}: {first}") from None


def store_op(*, writes: bool) -> Callable[[F], F]:
    """One store operation: one line on failure, and serialised with every other process using
    the same folder (see `KnowledgeBase._exclusive`)."""

    def wrap(fn: F) -> F:
        @functools.wraps(fn)
        def inner(self: KnowledgeBase, *args: Any, **kwargs: Any) -> Any:
            with self._exclusive(writes):
                return _one_line(self, lambda: fn(self, *args, **kwargs))

        return inner  # type: ignore[return-value]

    return wrap


class KnowledgeBase:
    """Persistent store of document chunks and learned Q/A pairs."""

    def __init__(self, path: str | os.PathLike[str], collection: str = COLLECTION) -> None:
        self.path = Path(path)
        self.collection = collection
        self._thread_lock = threading.RLock()
        self._depth = 0
        self._lock_fd: int | None = None
        self._seen = -1  # the store generation this process's Chroma client reflects
        self.lexical: LexicalIndex | None = None
        self.read_only = ""  # why the folder cannot be written; "" when it can
        self.store = self.path  # the folder Chroma and the lexical index open (a snapshot when read-only)
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
        self._seen = self._generation()
        if self.lexical is None:
            self.lexical = LexicalIndex(self.store)
        self._align()

    def _align(self) -> None:
        """Make the lexical index hold exactly Chroma's entries (a kill between the two writes, or
        a store made before the index existed, leaves them apart; Chroma is the reference)."""
        lexical = self._lexical
        if lexical.count() == self.col.count():
            return
        ours, theirs = set(self.col.get(include=[])["ids"]), lexical.ids()
        if theirs - ours:
            lexical.delete(theirs - ours)
        missing = sorted(ours - theirs)
        for start in range(0, len(missing), 1000):
            got = self.col.get(ids=missing[start : start + 1000], include=["documents", "metadatas"])
            lexical.upsert(got["ids"], got["documents"] or [], got["metadatas"] or [])  # type: ignore[arg-type]

    @property
    def _lexical(self) -> LexicalIndex:
        assert self.lexical is not None, "opened in _connect"
        return self.lexical

    # ---- one store, many processes ---------------------------------------------------------
    # Chroma's embedded store keeps index state in memory: two processes writing one folder lose
    # writes ("Error finding id") unless they take turns and each re-reads what the other wrote.
    # Every operation holds an exclusive file lock on the folder; a write bumps a generation
    # number; a process whose client is older than the folder's generation reopens it first.
    def _generation(self) -> int:
        try:
            return int((self.path / ".ech0-generation").read_text() or 0)
        except (OSError, ValueError):
            return 0

    def _bump_generation(self) -> None:
        tmp = self.path / f".ech0-generation.{os.getpid()}"
        tmp.write_text(str(self._seen))
        tmp.replace(self.path / ".ech0-generation")

    @contextlib.contextmanager
    def _exclusive(self, writes: bool, fresh: bool = True) -> Iterator[None]:
        with self._thread_lock:
            if self._depth == 0:
                if self.read_only:  # a reader of a folder it cannot write waits for the folder's writers
                    if writes:
                        raise KnowledgeBaseError(
                            f"knowledge base {self.path} cannot be written ({self.read_only}): nothing was stored"
                        )
                    with contextlib.suppress(OSError):
                        self._lock_fd = os.open(self.path / ".ech0.lock", os.O_RDONLY)
                else:
                    self._lock_fd = os.open(self.path / ".ech0.lock", os.O_RDWR | os.O_CREAT, 0o644)
                if self._lock_fd is not None:
                    fcntl.flock(self._lock_fd, fcntl.LOCK_SH if self.read_only else fcntl.LOCK_EX)
            self._depth += 1
            try:
                if fresh and self._depth == 1 and not self.read_only and self._generation() != self._seen:
                    self._client.close()  # another process wrote: read the store anew
                    self._connect(self._factory, self._settings)
                yield
                if writes:
                    self._seen = self._generation() + 1
                    _one_line(self, self._bump_generation)
            finally:
                self._depth -= 1
                if self._depth == 0 and self._lock_fd is not None:
                    fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
                    os.close(self._lock_fd)
                    self._lock_fd = None

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
            self.col.upsert(ids=ids, documents=texts, metadatas=metadatas, embeddings=embeddings)  # type: ignore[arg-type]
            self._lexical.upsert(ids, texts, metadatas)

    @store_op(writes=False)
    def search(
        self,
        query: str,
        k: int = 4,
        *,
        max_distance: float = 0.65,
        domain: str | None = None,
        kind: str | None = None,
        diversity: float = 0.3,
        method: str = "fused",
    ) -> list[Passage]:
        """Top-k passages, optionally only those for `domain` (or for every domain) and of one
        `kind`. `fused` (default): the dense ranking (cosine within `max_distance`) and the BM25
        ranking (within `max_distance` x LEXICAL_REACH) merged by reciprocal rank fusion - BM25
        brings up passages whose names, numbers or rare terms match although the embedding ranks
        them low;
        `dense` or `lexical`: one ranking alone. Maximal Marginal Relevance with weight
        `diversity` then drops near-duplicates in favour of passages that add something."""
        if method not in SEARCH_METHODS:
            raise Ech0Error(f"unknown search method {method!r}; use {', '.join(SEARCH_METHODS)}")
        n = self._lexical.count()  # the two indexes hold the same entries (`_align`); this count is cheaper
        if n == 0 or not query.strip():
            return []
        depth = min(max(k * 5, 20), n)
        wanted = _wanted(domain, kind)
        vector = embed([query])[0]
        found: dict[str, tuple[str, dict[str, Any], float, np.ndarray]] = {}  # id -> doc, meta, distance, vector
        fusion: dict[str, float] = {}
        if method != "lexical":
            # filtered here, not by Chroma: its metadata pre-filter scans SQLite (40 ms at 10k entries)
            res = self.col.query(
                query_embeddings=[vector],
                n_results=min(depth * (3 if domain or kind else 1), n),
                include=["documents", "metadatas", "distances", "embeddings"],
            )
            rows = zip(
                res["ids"][0],
                res["documents"][0],  # type: ignore[index]
                res["metadatas"][0],  # type: ignore[index]
                res["distances"][0],  # type: ignore[index]
                res["embeddings"][0],  # type: ignore[index]
                strict=True,
            )
            dense = [r for r in rows if r[3] <= max_distance and wanted(r[2] or {})][:depth]
            for rank, (cid, doc, meta, dist, emb) in enumerate(dense):
                found[cid] = (doc or "", meta or {}, float(dist), np.asarray(emb, dtype=np.float32))
                fusion[cid] = fusion.get(cid, 0.0) + 1.0 / (RRF_K + rank + 1)
        if method != "dense":
            hits = [cid for cid, _ in self._lexical.search(query, depth, wanted if domain or kind else None)]
            new = [cid for cid in hits if cid not in found]
            if new:
                got = self.col.get(ids=new, include=["documents", "metadatas", "embeddings"])
                columns = (got["ids"], got["documents"], got["metadatas"], got["embeddings"])
                for cid, doc, meta, emb in zip(*columns, strict=True):  # type: ignore[call-overload]
                    emb = np.asarray(emb, dtype=np.float32)
                    found[cid] = (doc or "", meta or {}, 1.0 - float(vector @ emb), emb)
            limit = float("inf") if method == "lexical" else max_distance * LEXICAL_REACH
            weight = 1.0 if method == "lexical" else LEXICAL_WEIGHT
            for rank, cid in enumerate(c for c in hits if c in found and found[c][2] <= limit):
                fusion[cid] = fusion.get(cid, 0.0) + weight / (RRF_K + rank + 1)
        # raw RRF scores differ by too little for relevance to outweigh redundancy: spread them
        low, high = min(fusion.values(), default=0.0), max(fusion.values(), default=1.0)
        spread = (high - low) or 1.0
        pool = [
            (
                cid,
                *found[cid][:3],
                found[cid][3],
                RANK_SHARE * (fusion[cid] - low) / spread + (1 - RANK_SHARE) * (1 - found[cid][2]),
            )
            for cid in fusion
        ]
        chosen: list[tuple[str, str, dict[str, Any], float, np.ndarray, float]] = []
        while pool and len(chosen) < k:

            def mmr(item: tuple[str, str, dict[str, Any], float, np.ndarray, float]) -> float:
                redundancy = max((float(item[4] @ c[4]) for c in chosen), default=0.0)
                return (1 - diversity) * item[5] - diversity * redundancy

            best = max(pool, key=mmr)
            pool.remove(best)
            if any(float(best[4] @ c[4]) > 0.97 for c in chosen):
                continue  # an exact or near-exact duplicate of a passage already chosen
            chosen.append(best)
        return [
            Passage(
                id=cid,
                text=doc,
                source=str(meta.get("source", "")),
                kind=str(meta.get("kind", "document")),
                score=round(1.0 - dist, 4),
                domain=str(meta.get("domain", "")),
            )
            for cid, doc, meta, dist, _, _ in chosen
        ]

    @store_op(writes=True)
    def learn(
        self,
        question: str,
        answer: str,
        *,
        expert: str,
        domain: str,
        mode: str,
        duplicate_similarity: float = 0.85,
    ) -> str | None:
        """Store a question/answer pair; a near-duplicate question updates the earlier entry.

        Returns the entry id, or None when the answer was empty and nothing was stored.
        """
        if not question.strip() or not answer.strip():
            return None
        question = question.strip()
        # Indexed by the question alone: a paraphrased question finds it even among long documents.
        vector = embed([question])
        entry_id = self.find_duplicate(question, vector[0], duplicate_similarity) or "learned-" + content_id(question)
        meta = {
            "kind": "learned",
            "source": f"learned:{expert}",
            "expert": expert,
            "domain": domain,
            "mode": mode,
            "question": question[:2000],
            "timestamp": time.time(),
        }
        self.upsert([entry_id], [f"Q: {question}\nA: {answer.strip()}"], [meta], embeddings=vector)
        return entry_id

    @store_op(writes=True)
    def add_paths(
        self,
        paths: Iterable[str | os.PathLike[str]],
        *,
        domain: str = "",
        progress: bool = True,
        follow_symlinks: bool = False,
        max_bytes: int = MAX_FILE_BYTES,
    ) -> dict:
        """Ingest text/markdown files and folders: chunked, with source metadata.

        Idempotent by content hash: an unchanged file is skipped; a changed file's new
        chunks are written first and its stale chunks removed after, so a crash at any
        point leaves either the old or the new version searchable, never neither.
        Inside a folder, a symlink that leads out of it is skipped unless `follow_symlinks`;
        binary (NUL-filled), undecodable and files over `max_bytes` are skipped; every skip is
        listed with its reason. The progress bar counts bytes, so one big file moves it too.
        """
        from tqdm import tqdm

        files: list[Path] = []
        skipped: list[str] = []
        for raw in paths:
            p = Path(raw)
            if p.is_dir():
                root = p.resolve()
                for f in sorted(p.rglob("*")):
                    if not (f.is_file() and f.suffix.lower() in TEXT_SUFFIXES):
                        continue
                    if not follow_symlinks and not f.resolve().is_relative_to(root):
                        skipped.append(f"{f}: a symlink out of {p} (not followed)")
                        continue
                    files.append(f)
            elif p.is_file():
                files.append(p)
            else:
                raise Ech0Error(f"no such file or folder: {p}")
        report: dict[str, Any] = {"files": len(files), "added": 0, "unchanged": 0, "skipped": skipped, "chunks": 0}
        sizes = {f: f.stat().st_size for f in files}
        for f in [f for f in files if sizes[f] > max_bytes]:
            skipped.append(f"{f}: larger than {max_bytes / 1e6:g}MB (raise the limit with --max-file-mb)")
            files.remove(f)
        t0 = time.perf_counter()
        bar = tqdm(
            total=sum(sizes[f] for f in files),
            desc="kb add",
            unit="B",
            unit_scale=True,
            file=sys.stderr,
            disable=not progress,
        )
        for n, f in enumerate(files):
            bar.set_postfix_str(f"{n}/{len(files)} files done, {f.name}")
            try:
                text = f.read_text(encoding="utf-8")
            except (UnicodeDecodeError, OSError) as exc:
                report["skipped"].append(f"{f}: {getattr(exc, 'strerror', None) or 'not UTF-8 text'}")
                bar.update(sizes[f])
                continue
            if "\x00" in text or not text.strip():
                report["skipped"].append(f"{f}: {'binary (NUL bytes)' if text.strip() else 'empty'}")
                bar.update(sizes[f])
                continue
            source = str(f.resolve())
            file_hash = hashlib.sha256(text.encode()).hexdigest()[:32]
            old = self.col.get(where={"source": source}, include=["metadatas"])
            metas_old = old["metadatas"] or []
            if metas_old and all(
                (m or {}).get("file_hash") == file_hash and (m or {}).get("n_chunks") == len(metas_old)
                for m in metas_old
            ):  # complete and current; a version cut short by a crash is written again
                report["unchanged"] += 1
                bar.update(sizes[f])
                continue
            unique: dict[str, tuple[str, str]] = {}  # a chunk repeated word for word in one file is kept once
            for heading, chunk in chunk_text(text):
                unique.setdefault(content_id(chunk, source), (heading, chunk))
            ids, chunks = list(unique), list(unique.values())
            metas = [
                {
                    "kind": "document",
                    "source": source,
                    "heading": heading[:200],
                    "chunk": i,
                    "file_hash": file_hash,
                    "n_chunks": len(chunks),
                    "domain": domain,
                    "timestamp": time.time(),
                }
                for i, (heading, _) in enumerate(chunks)
            ]
            done = 0
            for start in range(0, len(ids), 64):
                self.upsert(
                    ids[start : start + 64], [c for _, c in chunks[start : start + 64]], metas[start : start + 64]
                )
                step = sizes[f] * min(len(ids), start + 64) // max(1, len(ids)) - done
                bar.update(step)
                done += step
            stale = sorted(set(old["ids"]) - set(ids))
            if stale:
                self.col.delete(ids=stale)
            bar.update(sizes[f] - done)
            report["added"] += 1
            report["chunks"] += len(ids)
        bar.set_postfix_str(f"{len(files)}/{len(files)} files done")
        bar.close()
        seconds = time.perf_counter() - t0
        report["seconds"] = round(seconds, 2)
        report["chunks_per_second"] = round(report["chunks"] / seconds, 1) if report["chunks"] else 0.0
        return report

    @store_op(writes=True)
    def forget(self, *, ids: Iterable[str] = (), source: str = "") -> int:
        """Remove entries by id and/or every entry of a source (a file path or `learned:<expert>`)."""
        targets = set(ids)
        if source:
            wanted = str(Path(source).resolve()) if Path(source).exists() else source
            targets |= set(self.col.get(where={"source": wanted})["ids"])
        existing = set(self.col.get(ids=sorted(targets))["ids"]) if targets else set()
        if existing:
            self.col.delete(ids=sorted(existing))
            self._lexical.delete(existing)
        return len(existing)

    def find_duplicate(self, question: str, vector: np.ndarray, min_similarity: float) -> str | None:
        """Id of a learned entry asking the same thing: the two questions' embeddings (learned
        entries are indexed by their question) have cosine >= `min_similarity` and the same
        numbers (so 2+2 never overwrites 2+3)."""
        n = self.count()
        if n == 0:
            return None
        res = self.col.query(
            query_embeddings=[vector],
            n_results=min(3, n),
            where={"kind": "learned"},
            include=["metadatas", "distances"],
        )
        numbers = _NUMBERS.findall(question)
        for cid, meta, dist in zip(res["ids"][0], res["metadatas"][0], res["distances"][0], strict=True):  # type: ignore[index]
            if 1.0 - dist >= min_similarity and _NUMBERS.findall(str((meta or {}).get("question", ""))) == numbers:
                return cid
        return None

    @store_op(writes=False)
    def stats(self) -> dict[str, Any]:
        got = self.col.get(include=["metadatas"])
        kinds: dict[str, int] = {}
        sources: set[str] = set()
        for meta in got["metadatas"] or []:
            kinds[str(meta.get("kind", "document"))] = kinds.get(str(meta.get("kind", "document")), 0) + 1
            sources.add(str(meta.get("source", "")))
        report = {"path": str(self.path), "entries": self.count(), "by_kind": kinds, "sources": len(sources)}
        return report | ({"read_only": self.read_only} if self.read_only else {})
