"""`ech0-moe bench ingest`: `kb add` against its limit, the document encoder alone, in one run.

Three corpora: the shipped documents (`benchmarks/docs`, written by their projects), a folder of
N small notes (one paragraph of those documents each, written here), and optionally one big
text file (`--big-mb`, those documents repeated). For each: the encoder alone over the very
chunks `kb add` makes (chunks/s, tokens/s), `kb add` end to end into a fresh store, its share of
the encoder's speed and where its time went (read and parse, chunk, encode, write: Chroma,
lexical index, lock). Beside it, the same `kb add` writing each file on its own (one encoder
call, upsert, lock and generation bump per file: how it worked before batching). The big file
runs in a child process, which reports its resident memory growth.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from ech0_moe.datasets import BENCH_DIR
from ech0_moe.errors import Ech0Error
from ech0_moe.text import chunk_text

DOCS = BENCH_DIR / "docs"
GOAL_SHARE, GOAL_FILES_PER_S, GOAL_BIG_MB = 0.8, 30.0, 300


def small_notes(folder: Path, n: int) -> Path:
    """`n` notes of one paragraph each (the shipped documents' paragraphs, in turn)."""
    paras = [p.strip() for f in sorted(DOCS.iterdir()) for p in re.split(r"\n\s*\n", f.read_text())]
    paras = [p for p in paras if len(p) > 80 and chunk_text(p)]  # text, not a heading alone
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        (folder / f"note-{i:05d}.md").write_text(f"# Note {i}\n\n{paras[i % len(paras)]}\n")
    return folder


def big_text(path: Path, megabytes: float) -> Path:
    """A text file of about `megabytes` MB: the shipped documents again and again, every paragraph
    of each copy numbered (so no chunk repeats another, which `kb add` would store once)."""
    paras = [p for f in sorted(DOCS.iterdir()) for p in re.split(r"\n\s*\n", f.read_text()) if p.strip()]
    with path.open("w", encoding="utf-8") as fh:
        n = 0
        while fh.tell() < megabytes * 1e6:
            fh.write("\n\n".join(p if p.startswith(("#", "```")) else f"{p} [{n}]" for p in paras) + "\n\n")
            n += 1
    return path


def encoder_alone(folder: Path) -> dict[str, Any]:
    """The document encoder over the chunks `kb add` makes of `folder` (read and chunked first, untimed)."""
    from ech0_moe.embeddings import embed, get_embedder
    from ech0_moe.memory import ingest, loaders

    walked, _ = ingest._walk([folder], follow_symlinks=False)
    texts = []
    for f, expect in walked.values():
        try:
            parts, _ = loaders.load(f, expect)
        except Exception:  # kb add skips it too, whatever its loader raised
            continue
        texts += [c[1] for _, c in ingest._chunks(str(f), ((p.text, p.page) for p in parts))]
    if not texts:
        raise Ech0Error(f"{folder}: no file there that kb add reads, nothing to measure")
    embed(["warm up"])
    t = time.perf_counter()
    embed(texts)
    seconds = time.perf_counter() - t
    tokens = sum(len(e.ids) for e in get_embedder().tokenizer.encode_batch(texts))
    return {
        "chunks": len(texts),
        "tokens": tokens,
        "seconds": round(seconds, 2),
        "chunks_per_second": round(len(texts) / seconds, 1),
        "tokens_per_second": round(tokens / seconds),
    }


def kb_add(folder: Path, batch_chunks: int | None = None, **options: Any) -> dict[str, Any]:
    """`kb add folder` into a fresh store."""
    from ech0_moe.memory.kb import KnowledgeBase

    with tempfile.TemporaryDirectory(prefix="ech0-bench-ingest-") as tmp:
        kb = KnowledgeBase(Path(tmp) / "kb")
        extra = {"batch_chunks": batch_chunks} if batch_chunks else {}
        report = kb.add_paths([folder], progress=False, **extra, **options)
    seconds = report["seconds"]
    return {
        "files": report["files"],
        "chunks": report["chunks"],
        "seconds": seconds,
        "chunks_per_second": report["chunks_per_second"],
        "files_per_second": round(report["files"] / seconds, 1),
        "seconds_in": report["seconds_in"],
    }


def corpus(folder: Path, per_file_baseline: bool) -> dict[str, Any]:
    alone = encoder_alone(folder)
    ours = kb_add(folder)
    out: dict[str, Any] = {
        "encoder_alone": alone,
        "kb_add": {**ours, "share_of_encoder": round(ours["chunks_per_second"] / alone["chunks_per_second"], 3)},
    }
    if per_file_baseline:
        before = kb_add(folder, batch_chunks=1)
        out["kb_add_one_write_per_file"] = {
            **before,
            "share_of_encoder": round(before["chunks_per_second"] / alone["chunks_per_second"], 3),
        }
    return out


_CHILD = """
import json, resource, sys, tempfile, time
from pathlib import Path
from ech0_moe.memory.kb import KnowledgeBase
def rss():
    return int(open('/proc/self/statm').read().split()[1]) * resource.getpagesize()
with tempfile.TemporaryDirectory(prefix='ech0-bench-ingest-') as tmp:
    kb = KnowledgeBase(Path(tmp) / 'kb')
    warm = Path(tmp) / 'warm.md'
    warm.write_text(' '.join(f'w{i}x{i * 7919}' for i in range(6000)))  # 160-word chunks of 256 tokens
    kb.add_paths([warm], progress=False)  # the encoder at its widest batch, and Chroma's first write
    base = rss()
    report = kb.add_paths([sys.argv[1]], progress=True, max_bytes=10**12)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({'report': report, 'rss_before': base, 'rss_peak': peak}))
"""


def big_file(megabytes: float, folder: Path, progress: bool) -> dict[str, Any]:
    path = big_text(folder / "big.txt", megabytes)
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD, str(path)],
        stdout=subprocess.PIPE,
        stderr=None if progress else subprocess.DEVNULL,
        text=True,
        check=True,
    )
    out = json.loads(proc.stdout)
    report = out["report"]
    growth = (out["rss_peak"] - out["rss_before"]) / 1e6
    return {
        "megabytes": round(path.stat().st_size / 1e6, 1),
        "chunks": report["chunks"],
        "seconds": report["seconds"],
        "chunks_per_second": report["chunks_per_second"],
        "seconds_in": report["seconds_in"],
        "resident_growth_mb": round(growth, 1),
    }


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--docs", metavar="FOLDER", default=str(DOCS), help="documents to ingest (default: benchmarks/docs)"
    )
    parser.add_argument("--small-files", type=int, default=3000, metavar="N", help="small notes (default 3000)")
    parser.add_argument("--big-mb", type=float, default=0, metavar="MB", help="also one big text file (e.g. 50)")
    parser.add_argument("--no-baseline", action="store_true", help="skip the one-write-per-file runs")


def run(args: argparse.Namespace) -> dict[str, Any]:
    """The encoder alone and `kb add` on each corpus, side by side."""
    if not 1 <= args.small_files <= 1_000_000:
        raise Ech0Error(f"--small-files must be a whole number from 1 to 1000000, got {args.small_files}")
    if not 0 <= args.big_mb <= 10_000:
        raise Ech0Error(f"--big-mb must be from 0 (none) to 10000, got {args.big_mb:g}")
    with tempfile.TemporaryDirectory(prefix="ech0-bench-corpus-") as tmp:
        out: dict[str, Any] = {
            "documents": {
                "folder": args.docs,
                "written_here": False,
                **corpus(Path(args.docs), not args.no_baseline),
            },
            "small_files": {
                "written_here": True,
                **corpus(small_notes(Path(tmp) / "notes", args.small_files), not args.no_baseline),
            },
        }
        if args.big_mb:
            out["big_file"] = {"written_here": True, **big_file(args.big_mb, Path(tmp), progress=True)}
    out["goals"] = {
        "share_of_encoder": GOAL_SHARE,
        "small_files_per_second": GOAL_FILES_PER_S,
        "big_file_resident_growth_mb": GOAL_BIG_MB,
    }
    return out
