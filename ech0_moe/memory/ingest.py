"""`kb add`: files and folders into the store, chunked, with where each chunk came from.

Idempotent by content hash; a changed file's new chunks are written before its stale ones are
deleted (from both indexes), so a crash leaves the old or the new version searchable.
"""

from __future__ import annotations

import hashlib
import os
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ech0_moe.errors import Ech0Error
from ech0_moe.memory import loaders
from ech0_moe.memory.store import Store, content_id, store_op
from ech0_moe.text import chunk_text

MAX_FILE_BYTES = 20_000_000  # `kb add` skips larger files unless asked (--max-file-mb)


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


@store_op(writes=True)
def add_paths(
    store: Store,
    paths: Iterable[str | os.PathLike[str]],
    *,
    domain: str = "",
    progress: bool = True,
    follow_symlinks: bool = False,
    max_bytes: int = MAX_FILE_BYTES,
) -> dict:
    """Ingest files and folders (every type of `loaders.py`): chunked, with where each chunk came
    from (file, page of a PDF, heading of Markdown and HTML).

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
                why = _not_ingestible(f, p, root, follow_symlinks)
                if why:
                    skipped.append(f"{f}: {why}")
                elif not f.is_dir():
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
        try:  # read whole, or not at all: nothing half-read is stored
            parts = loaders.load(f)
            if not any(p.text.strip() for p in parts):
                raise loaders.Unreadable("empty")
            file_hash = hashlib.sha256(f.read_bytes()).hexdigest()[:32]
        except (loaders.Unreadable, OSError) as exc:
            report["skipped"].append(f"{f}: {getattr(exc, 'strerror', None) or exc}")
            bar.update(sizes[f])
            continue
        source = str(f.resolve())
        old = store.col.get(where={"source": source}, include=["metadatas"])
        metas_old = old["metadatas"] or []
        if metas_old and all(
            (m or {}).get("file_hash") == file_hash and (m or {}).get("n_chunks") == len(metas_old) for m in metas_old
        ):  # complete and current; a version cut short by a crash is written again
            report["unchanged"] += 1
            bar.update(sizes[f])
            continue
        unique: dict[str, tuple[str, str, int]] = {}  # a chunk repeated word for word in one file is kept once
        for part in parts:
            for heading, chunk in chunk_text(part.text):
                unique.setdefault(content_id(chunk, source), (heading, chunk, part.page))
        ids, chunks = list(unique), list(unique.values())
        metas = [
            {
                "kind": "document",
                "source": source,
                "heading": heading[:200],
                "page": page,
                "chunk": i,
                "file_hash": file_hash,
                "n_chunks": len(chunks),
                "domain": domain,
                "timestamp": time.time(),
            }
            for i, (heading, _, page) in enumerate(chunks)
        ]
        done = 0
        for start in range(0, len(ids), 64):
            texts = [c for _, c, _ in chunks[start : start + 64]]
            store.upsert(ids[start : start + 64], texts, metas[start : start + 64])
            step = sizes[f] * min(len(ids), start + 64) // max(1, len(ids)) - done
            bar.update(step)
            done += step
        store.delete(set(old["ids"]) - set(ids))  # both indexes: the lexical one must not keep them
        bar.update(sizes[f] - done)
        report["added"] += 1
        report["chunks"] += len(ids)
    bar.set_postfix_str(f"{len(files)}/{len(files)} files done")
    bar.close()
    seconds = time.perf_counter() - t0
    report["seconds"] = round(seconds, 2)
    report["chunks_per_second"] = round(report["chunks"] / seconds, 1) if report["chunks"] else 0.0
    return report
