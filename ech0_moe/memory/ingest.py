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
from ech0_moe.memory.store import Store, content_id, store_op
from ech0_moe.text import chunk_text

MAX_FILE_BYTES = 20_000_000  # `kb add` skips larger files unless asked (--max-file-mb)
TEXT_SUFFIXES = frozenset({".md", ".markdown", ".txt", ".rst", ".text"})


def read_text(path: Path) -> str:
    """A text file's content through langchain-community's `TextLoader` (the document loaders'
    one interface); its failures come back as the `OSError` or `UnicodeDecodeError` behind them."""
    from langchain_community.document_loaders import TextLoader

    try:
        return "".join(d.page_content for d in TextLoader(str(path), encoding="utf-8").lazy_load())
    except RuntimeError as exc:  # "Error loading PATH", raised from the real cause
        if isinstance(exc.__cause__, UnicodeDecodeError | OSError):
            raise exc.__cause__ from None
        raise


def _not_ingestible(f: Path, root: Path, follow_symlinks: bool) -> str:
    """Why a path inside a folder is not read ("" when it is, or when it is a folder to walk)."""
    try:
        target = f.resolve(strict=True)
    except (OSError, RuntimeError):  # a symlink loop, or one whose target is gone
        return "a broken or looping symlink"
    if not follow_symlinks and not target.is_relative_to(root):
        return f"a symlink out of {root} (not followed; --follow-symlinks to follow)"
    if f.is_dir():
        return ""
    if not f.is_file():
        return "not a regular file (a FIFO, socket or device)"
    if f.suffix.lower() not in TEXT_SUFFIXES:
        return f"not a text type this version reads ({', '.join(sorted(TEXT_SUFFIXES))})"
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
                why = _not_ingestible(f, root, follow_symlinks)
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
        try:
            text = read_text(f)
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
        old = store.col.get(where={"source": source}, include=["metadatas"])
        metas_old = old["metadatas"] or []
        if metas_old and all(
            (m or {}).get("file_hash") == file_hash and (m or {}).get("n_chunks") == len(metas_old) for m in metas_old
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
            store.upsert(ids[start : start + 64], [c for _, c in chunks[start : start + 64]], metas[start : start + 64])
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
