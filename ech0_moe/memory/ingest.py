"""`kb add`: files and folders into the store, chunked, with where each chunk came from.

Files are read and chunked one by one and written in batches (about BATCH_CHUNKS chunks): one
encoder call, one Chroma upsert, one lexical write, one folder lock and one generation bump per
batch, not per file, so a folder of small notes goes in at nearly the encoder's speed. A text
file over STREAM_BYTES is streamed: checked whole first (UTF-8, no NUL bytes), then chunked and
written a batch at a time, so its size does not become memory.

Idempotent by content hash; a changed file's new chunks are written before its stale ones are
deleted (from both indexes), so a crash leaves the old or the new version searchable.
"""

from __future__ import annotations

import os
import random
import sys
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ech0_moe.embeddings import embed
from ech0_moe.errors import Ech0Error
from ech0_moe.memory import loaders
from ech0_moe.memory.store import Store, content_id, store_op
from ech0_moe.owners import SHARED, check_owner
from ech0_moe.routing import taught
from ech0_moe.safety import inert
from ech0_moe.text import chunk_units, split_blocks

MAX_FILE_BYTES = 100_000_000  # `kb add` skips larger files unless asked (--max-file-mb)
STREAM_BYTES = 8_000_000  # a text file larger than this is streamed, not read whole
BATCH_CHUNKS = 256  # chunks encoded and written together

Chunk = tuple[str, str, int]  # heading, text, page


@dataclass
class Prepared:
    """One file read and chunked, waiting for its batch: its chunks by id (each once)."""

    path: Path
    source: str
    file_hash: str
    size: int
    chunks: dict[str, Chunk] = field(default_factory=dict)


def _not_ingestible(f: Path, folder: Path, root: Path, follow_symlinks: bool) -> str:
    """Why a path inside `folder` (resolved: `root`) is not read ("" when it is, or a folder to walk)."""
    try:
        target = f.resolve(strict=True)
    except (OSError, RuntimeError):  # a symlink loop, or one whose target is gone
        return "a broken or looping symlink"
    if not follow_symlinks and not target.is_relative_to(root):
        return f"a symlink out of {folder} (not followed)"
    if f.is_dir():
        return ""
    if not f.is_file():
        return "not a regular file (a FIFO, socket or device)"
    if f.suffix.lower() not in loaders.SUFFIXES:
        return f"not a type kb add reads ({', '.join(sorted(loaders.SUFFIXES))})"
    return ""


Walked = dict[Path, tuple[Path, os.stat_result]]  # each file found: where it led then, and what it was


def _walk(paths: Iterable[str | os.PathLike[str]], follow_symlinks: bool) -> tuple[Walked, list[str]]:
    """The files to read (each resolved and `stat`ed now: it must still be that file when read)
    and the paths skipped, with their reasons."""
    files: list[Path] = []
    skipped: list[str] = []
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            root = p.resolve()
            for f in sorted(p.rglob("*")):
                why = _not_ingestible(f, p, root, follow_symlinks)
                if why:
                    skipped.append(f"{f}: {why}")
                elif not f.is_dir():
                    files.append(f)
        elif p.is_file():
            files.append(p)
        else:
            raise Ech0Error(f"no such file or folder: {p}")
    walked: Walked = {}
    for f in files:
        try:
            target = f.resolve(strict=True)
            walked.setdefault(f, (target, target.stat()))
        except (OSError, RuntimeError) as exc:
            skipped.append(f"{f}: {getattr(exc, 'strerror', None) or exc}")
    return walked, skipped


def _chunks(source: str, units: Iterable[tuple[str, int]], owner: str = SHARED) -> Iterator[tuple[str, Chunk]]:
    """(id, chunk) for each chunk of `units` (text, page), control-token strings made inert
    (`safety.inert`); a chunk repeated word for word is kept once. The id names the source and,
    outside the shared namespace, the owner: one file added to two namespaces is two entries."""
    seen: set[str] = set()
    key = source if owner == SHARED else f"{source}\x00{owner}"
    for text, page in units:
        for heading, chunk in chunk_units(split_blocks(inert(text))):
            cid = content_id(chunk, key)
            if cid not in seen:
                seen.add(cid)
                yield cid, (heading, chunk, page)


class Ingest:
    """One `kb add` run: the report, the time spent in each step, the progress bar."""

    def __init__(
        self, store: Store, domain: str, owner: str, files: int, total_bytes: int, progress: bool, batch: int
    ) -> None:
        from tqdm import tqdm

        self.store, self.domain, self.owner = store, domain, owner
        self.files, self.done_files, self.batch_chunks = files, 0, batch
        self.spent: Counter[str] = Counter()  # seconds: read, chunk, encode, write (then the store's own parts)
        self.report: dict[str, Any] = {"added": 0, "unchanged": 0, "chunks": 0}
        self.sample: list[tuple[str, str]] = []  # with a domain: a fair sample of the chunks written
        self.seen = 0
        self.rng = random.Random(0)
        self.bar = tqdm(
            total=total_bytes, desc="kb add", unit="B", unit_scale=True, file=sys.stderr, disable=not progress
        )

    def show(self) -> None:
        self.bar.set_postfix_str(f"{self.done_files}/{self.files} files done, {self.report['chunks']} chunks")

    def prepare(self, f: Path, expect: os.stat_result, size: int) -> Prepared:
        """Read and chunk a whole file (`loaders.Unreadable`, or whatever its loader raises, when it cannot be)."""
        t = time.perf_counter()
        parts, file_hash = loaders.load(f, expect)
        if not any(p.text.strip() for p in parts):
            raise loaders.Unreadable("empty")
        t2 = time.perf_counter()
        source = str(f)  # resolved by the walk
        prepared = Prepared(
            f, source, file_hash, size, dict(_chunks(source, ((p.text, p.page) for p in parts), self.owner))
        )
        if not prepared.chunks:
            raise loaders.Unreadable("no text beyond headings")
        self.spent["read"] += t2 - t
        self.spent["chunk"] += time.perf_counter() - t2
        return prepared

    def write(self, batch: list[Prepared]) -> None:
        """Encode and write the chunks of `batch`'s files that are new or changed."""
        if not batch:
            return
        current = self.current([p.source for p in batch])
        todo = [p for p in batch if current.get(p.source) != (p.file_hash, len(p.chunks))]
        self.report["unchanged"] += len(batch) - len(todo)
        if todo:  # else nothing new: no write, no lock, no generation bump
            ids = [cid for p in todo for cid in p.chunks]
            texts = [c[1] for p in todo for c in p.chunks.values()]
            metas = [self.meta(p, i, c) for p in todo for i, c in enumerate(p.chunks.values())]
            self.store_chunks(ids, texts, metas, {p.source: set(p.chunks) for p in todo})
            self.report["added"] += len(todo)
        self.done_files += len(batch)
        self.bar.update(sum(p.size for p in batch))
        self.show()

    def meta(self, p: Prepared, i: int, chunk: Chunk, n_chunks: int = 0) -> dict[str, Any]:
        heading, _, page = chunk
        return {
            "kind": "document",
            "owner": self.owner,
            "source": p.source,
            "heading": heading[:200],
            "page": page,
            "chunk": i,
            "file_hash": p.file_hash,
            "n_chunks": n_chunks or len(p.chunks),
            "domain": self.domain,
            "timestamp": time.time(),
        }

    def current(self, sources: list[str]) -> dict[str, tuple[str, int] | None]:
        """Each stored source's (file hash, chunks) when all its chunks agree on them and are all
        there; a version cut short by a crash (or changed) is None, to be written again."""
        by: dict[str, list[dict[str, Any]]] = {}
        for _, meta in _stored(self.store, sources, self.owner):
            by.setdefault(str(meta.get("source")), []).append(meta)
        out: dict[str, tuple[str, int] | None] = {}
        for source, metas in by.items():
            marks = {(m.get("file_hash"), m.get("n_chunks")) for m in metas}
            out[source] = marks.pop() if len(marks) == 1 and metas[0].get("n_chunks") == len(metas) else None
        return out

    def store_chunks(
        self, ids: list[str], texts: list[str], metas: list[dict[str, Any]], keep: dict[str, set[str]]
    ) -> None:
        """Encode `texts`, then one locked write: the new chunks, then the stale chunks of each
        file in `keep` (what it had before and no longer has; `keep` empty: remove nothing)."""
        t = time.perf_counter()
        vectors = embed(texts)
        t2 = time.perf_counter()
        _commit(self.store, ids, texts, metas, vectors, keep, self.owner)
        self.spent["encode"] += t2 - t
        self.spent["write"] += time.perf_counter() - t2
        self.report["chunks"] += len(ids)
        if self.domain:  # reservoir: every chunk of the run equally likely to be a routing example
            for text, meta in zip(texts, metas, strict=True):
                self.seen += 1
                if len(self.sample) < taught.PER_DOMAIN:
                    self.sample.append((text, meta["source"]))
                elif (j := self.rng.randrange(self.seen)) < taught.PER_DOMAIN:
                    self.sample[j] = (text, meta["source"])

    def stream(self, f: Path, expect: os.stat_result, size: int) -> None:
        """A big text file, read through one descriptor (`loaders.opened`): checked whole, then
        chunked and written a batch at a time."""
        with loaders.opened(f, expect) as src:
            self._stream(f, src, size)

    def _stream(self, f: Path, src: Path, size: int) -> None:
        t = time.perf_counter()
        file_hash = loaders.check_text(src)  # Unreadable before anything is stored
        source = str(f)  # resolved by the walk
        stored = self.current([source]).get(source)  # complete, and of this content: nothing to do
        if stored and stored[0] == file_hash:
            self.spent["read"] += time.perf_counter() - t
            self.report["unchanged"] += 1
            self.done_files += 1
            self.bar.update(size)
            return
        p = Prepared(f, source, file_hash, size)
        n_chunks = sum(1 for _ in _chunks(source, ((b, 0) for b in loaders.text_blocks(src)), self.owner))
        self.spent["read"] += time.perf_counter() - t
        written: set[str] = set()
        batch: list[tuple[str, Chunk]] = []
        done = 0

        def flush(last: bool) -> None:
            nonlocal done
            metas = [self.meta(p, len(written) + i, c, n_chunks) for i, (_, c) in enumerate(batch)]
            written.update(cid for cid, _ in batch)
            ids, texts = [cid for cid, _ in batch], [c[1] for _, c in batch]
            self.store_chunks(ids, texts, metas, {source: written} if last else {})
            step = size * len(written) // max(1, n_chunks) - done
            self.bar.update(step)
            done += step
            self.show()
            batch.clear()

        t = time.perf_counter()
        for item in _chunks(source, ((b, 0) for b in loaders.text_blocks(src)), self.owner):
            batch.append(item)
            if len(batch) >= self.batch_chunks:
                self.spent["chunk"] += time.perf_counter() - t
                flush(last=False)
                t = time.perf_counter()
        self.spent["chunk"] += time.perf_counter() - t
        flush(last=True)
        self.bar.update(size - done)
        self.report["added"] += 1
        self.done_files += 1


def _of(sources: list[str], owner: str) -> dict[str, Any]:
    """Chroma's filter for the entries of `sources` in `owner`'s namespace."""
    return {"$and": [{"source": {"$in": sources}}, {"owner": owner}]}


def _reason(exc: Exception) -> str:
    """Why one file could not be read, in one short line."""
    if isinstance(exc, loaders.Unreadable):
        return str(exc)
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    detail = (str(exc).strip().splitlines() or [""])[0][:120]
    return f"could not be read ({type(exc).__name__}{': ' + detail if detail else ''})"


@store_op(writes=False)
def _stored(store: Store, sources: list[str], owner: str) -> list[tuple[str, dict[str, Any]]]:
    return list(store.entries(_of(sources, owner)))


@store_op(writes=True)
def _commit(
    store: Store,
    ids: list[str],
    texts: list[str],
    metas: list[dict[str, Any]],
    vectors: Any,
    keep: dict[str, set[str]],
    owner: str,
) -> None:
    store.upsert(ids, texts, metas, embeddings=vectors)
    if keep:  # stale chunks: what each file had before and no longer has (read under the same lock)
        kept = set().union(*keep.values())  # a chunk's id names its source (`content_id`)
        store.delete(i for i in store.ids(_of(list(keep), owner)) if i not in kept)  # both indexes


def add_paths(
    store: Store,
    paths: Iterable[str | os.PathLike[str]],
    *,
    domain: str = "",
    namespace: str = SHARED,
    progress: bool = True,
    follow_symlinks: bool = False,
    max_bytes: int = MAX_FILE_BYTES,
    stream_bytes: int = STREAM_BYTES,
    batch_chunks: int = BATCH_CHUNKS,
) -> dict:
    """Ingest files and folders (every type of `loaders.py`): chunked, with where each chunk came
    from (file, page of a PDF, heading of Markdown and HTML), in `namespace` (`owners`: the shared
    one by default, which every asker reads).

    Idempotent by content hash: an unchanged file is skipped; a changed file's new chunks are
    written first and its stale chunks removed after, so a crash at any point leaves either the
    old or the new version searchable, never neither. Inside a folder, a symlink that leads out
    of it is skipped unless `follow_symlinks`; binary (NUL-filled), undecodable and files over
    `max_bytes` are skipped; every skip is listed with its reason. The progress bar counts bytes
    (with chunks and an ETA), so one big file moves it too. The report's `seconds_in` splits the
    time: read (and parse), chunk, encode, write; and within write: chroma, lexical, lock (waiting)."""
    store.check_writable()
    check_owner(namespace, what="namespace", shared_ok=True)
    walked, skipped = _walk(paths, follow_symlinks)
    files = list({walked[f][0]: f for f in reversed(walked)}.values())[::-1]  # a file named twice is read once
    sizes = {f: walked[f][1].st_size for f in files}
    for f in [f for f in files if sizes[f] > max_bytes]:
        skipped.append(f"{f}: larger than {max_bytes / 1e6:g}MB (raise the limit with --max-file-mb)")
        files.remove(f)
    t0 = time.perf_counter()
    before = Counter(store.spent)
    run = Ingest(store, domain, namespace, len(files), sum(sizes[f] for f in files), progress, batch_chunks)
    batch: list[Prepared] = []
    for f in files:
        try:
            if sizes[f] > stream_bytes and loaders.KINDS.get(f.suffix.lower()) == "text":
                run.write(batch)
                batch = []
                run.stream(*walked[f], sizes[f])
                continue
            batch.append(run.prepare(*walked[f], sizes[f]))  # read whole, or not at all
        except Ech0Error:  # the store, not the file: the run stops with its one line
            raise
        except Exception as exc:  # any loader, any library: this file is skipped with its reason
            skipped.append(f"{f}: {_reason(exc)}")
            run.done_files += 1
            run.bar.update(sizes[f])
            continue
        if sum(len(p.chunks) for p in batch) >= batch_chunks:
            run.write(batch)
            batch = []
    run.write(batch)
    if run.report["chunks"]:
        store.snapshot_lexical()  # the next process's first search reads it, not the whole index
    if run.sample:  # routing examples for the domain's experts, on the router's next refit
        run.report["routing_examples"] = taught.add_documents(store.path, domain, run.sample, namespace)
    run.bar.close()
    seconds = time.perf_counter() - t0
    spent = run.spent + (store.spent - before)
    return {
        "files": len(files),
        **run.report,
        "skipped": skipped,
        "seconds": round(seconds, 2),
        "chunks_per_second": round(run.report["chunks"] / seconds, 1) if run.report["chunks"] else 0.0,
        "seconds_in": {k: round(v, 3) for k, v in sorted(spent.items())},
    }
