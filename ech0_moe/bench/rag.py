"""`ech0-moe bench rag`: retrieval quality (dense, lexical, fused) and search speed on a fresh
knowledge base, plus learned answers found again by a paraphrase."""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from ech0_moe import datasets
from ech0_moe.bench.common import norm, rank, recall
from ech0_moe.datasets import BENCH_DIR
from ech0_moe.errors import Ech0Error


def rag_rows(rows: list[dict[str, Any]], folder: Path, source: str = "data") -> list[dict[str, Any]]:
    """Rows of `{question, answers (or answer), passages}` as benchmark rows; their passages
    (each once) become text files in `folder`, to be ingested like any document."""
    out = []
    passages: dict[str, Path] = {}
    folder.mkdir(parents=True, exist_ok=True)
    for n, row in enumerate(rows, 1):
        answers = row.get("answers") or ([row["answer"]] if isinstance(row.get("answer"), str) else [])
        if not isinstance(row.get("question"), str) or not answers or not all(isinstance(a, str) for a in answers):
            raise Ech0Error(f"{source}: row {n}: needs a 'question' and 'answers' (strings)")
        for text in row.get("passages") or []:
            if isinstance(text, str) and text.strip() and text not in passages:
                passages[text] = folder / f"passage-{len(passages):05d}.txt"
                passages[text].write_text(text, encoding="utf-8")
        out.append({"question": row["question"], "answers": answers, "paraphrase": row.get("paraphrase", "")})
    return out


def _pad(kb: Any, n: int, seed: int = 0) -> None:
    """Add `n` filler chunks (shuffled words of the stored documents, random unit vectors) so
    search time is measured at that size; fillers never hold an answer's exact wording."""
    rng = np.random.default_rng(seed)
    words = " ".join(kb.col.get(limit=200, include=["documents"])["documents"] or ["filler"]).split()
    for start in tqdm(range(0, n, 500), desc="pad", unit="x500", file=sys.stderr, leave=False):
        size = min(500, n - start)
        vectors = rng.normal(size=(size, 384)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        texts = [" ".join(rng.choice(words, 60)) for _ in range(size)]
        ids = [f"pad-{start + i}" for i in range(size)]
        kb.upsert(ids, texts, [{"kind": "document", "source": "pad", "domain": ""}] * size, embeddings=vectors)
    kb.snapshot_lexical()  # as `kb add` leaves it: a new process's first search reads the snapshot


_FIRST = """
import json, sys, time
from ech0_moe.embeddings import embed
embed(["warm up"])  # the encoder's own start is not the store's
t0 = time.perf_counter()
from ech0_moe.memory.kb import KnowledgeBase
kb = KnowledgeBase(sys.argv[1])
t1 = time.perf_counter()
kb.search(sys.argv[2], k=4)
t2 = time.perf_counter()
kb.search(sys.argv[2] + " again", k=4)
t3 = time.perf_counter()
print(json.dumps({"open_seconds": t1 - t0, "first_search_seconds": t2 - t1, "second_search_seconds": t3 - t2}))
"""


def first_search(kb_dir: Path, question: str) -> dict[str, float]:
    """A new process opening the store and searching it: seconds to open, for the first search
    (which reads the lexical postings) and for the next one."""
    proc = subprocess.run(
        [sys.executable, "-c", _FIRST, str(kb_dir), question], capture_output=True, text=True, check=True
    )
    return {k: round(v, 3) for k, v in json.loads(proc.stdout).items()}


def bench_rag(
    rows: list[dict[str, Any]],
    kb_dir: Path,
    k: int = 4,
    max_distance: float = 0.65,
    docs: Path = BENCH_DIR / "docs",
    pad: int = 0,
) -> dict[str, Any]:
    """Retrieval quality on a fresh knowledge base in `kb_dir` holding `docs` (+ `pad` fillers):
    for dense, lexical and fused search, is a chunk holding the answer retrieved (recall@1,
    recall@k, MRR, median ms) for the questions and their paraphrases; then learned answers
    (after learning each question, does its paraphrase bring the learned entry back?), measured
    after the document figures so learned entries never count as documents."""
    from ech0_moe.memory.kb import SEARCH_METHODS, KnowledgeBase

    kb = KnowledgeBase(kb_dir)
    t0 = time.perf_counter()
    ingested = kb.add_paths([docs], progress=False)
    ingest_seconds = time.perf_counter() - t0
    if pad:
        _pad(kb, pad)

    def holds_answer(r: dict[str, Any]) -> Callable[[Any], bool]:
        answers = [norm(a).lower() for a in r.get("answers") or [r["answer"]]]
        return lambda c: any(a in norm(c.text).lower() for a in answers)

    out: dict[str, Any] = {
        "n": len(rows),
        "k": k,
        "max_distance": max_distance,
        "chunks": kb.stats()["by_kind"].get("document", 0),
        "ingest_chunks_per_second": round(ingested["chunks"] / ingest_seconds, 1),
        "documents": {},
    }
    out["first_search"] = first_search(kb_dir, rows[0]["question"])
    questions = [("original", "question"), ("paraphrase", "paraphrase")]
    splits = sorted({r.get("split", "all") for r in rows})
    for method in SEARCH_METHODS:
        times: list[float] = []
        figures: dict[str, Any] = {}
        for label, key in questions:
            asked = [r for r in rows if r.get(key)]
            ranks: dict[str, list[int]] = {split: [] for split in splits}
            for r in tqdm(asked, desc=f"rag {method} {label}", unit="q", file=sys.stderr, leave=False):
                t1 = time.perf_counter()
                hits = kb.search(r[key], k=k, max_distance=max_distance, kind="document", method=method)
                times.append(time.perf_counter() - t1)
                ranks[r.get("split", "all")].append(rank(hits, holds_answer(r)))
            every = [x for part in ranks.values() for x in part]
            if every:
                figures[label] = recall(every, k)
            if len(splits) > 1:
                for split, part in ranks.items():
                    if part:
                        figures[f"{label}:{split}"] = recall(part, k)
        figures["median_search_ms"] = round(statistics.median(times) * 1000, 3)
        out["documents"][method] = figures
    learned_ids = {}
    for r in tqdm(rows, desc="learn", unit="q", file=sys.stderr, leave=False):
        answer = (r.get("answers") or [r.get("answer")])[0]
        learned_ids[r["question"]] = kb.learn(
            r["question"], f"The answer is {answer}.", expert="general", domain="general", mode="bench"
        )
    asked = [r for r in rows if r.get("paraphrase")]
    learned = [
        rank(
            kb.search(r["paraphrase"], k=k, max_distance=max_distance),
            lambda c, r=r: c.id == learned_ids[r["question"]],
        )
        for r in asked
    ]
    if learned:
        out["learned_paraphrase"] = recall(learned, k)
        for split in splits if len(splits) > 1 else ():
            part = [x for x, r in zip(learned, asked, strict=True) if r.get("split", "all") == split]
            if part:
                out[f"learned_paraphrase:{split}"] = recall(part, k)
    return out


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data", metavar="FILE", help="JSONL of {question, answers, passages} (default: the packaged QA set)"
    )
    parser.add_argument("--docs", metavar="DIR", help="a folder to ingest, for --data rows without passages")
    parser.add_argument("--pad", type=int, default=0, metavar="N", help="add N filler chunks to time search at size")


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Recall@1/@k, MRR and median search ms per method; learned-answer recall."""
    with tempfile.TemporaryDirectory(prefix="ech0-bench-rag-") as tmp:
        docs, rows = BENCH_DIR / "docs", datasets.load_qa(files=tuple(datasets.QA_FILES))
        if args.data:  # {question, answers, passages}; or {question, answers} over --docs
            passages = Path(tmp) / "passages"
            rows = rag_rows(datasets.load_jsonl(args.data, ("question",)), passages, args.data)
            if not args.docs and not any(passages.iterdir()):
                raise Ech0Error(
                    f"bench rag: the rows of {args.data} carry no passages; name the folder of "
                    "documents they ask about with --docs DIR"
                )
            docs = Path(args.docs) if args.docs else passages
        return bench_rag(rows, Path(tmp) / "kb", docs=docs, pad=args.pad)
