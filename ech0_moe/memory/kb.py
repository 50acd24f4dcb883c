"""The knowledge base the graph uses: hybrid search, learned answers and `forget`, over a `Store`.

Search scores each candidate of the dense (Chroma) and BM25 indexes by a mix of its cosine and
its BM25 score, then picks diverse passages by Maximal Marginal Relevance (`ranking.py`).
Files go in through `ingest.py`.
"""

from __future__ import annotations

import math
import os
import re
import time
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from ech0_moe.embeddings import embed
from ech0_moe.errors import Ech0Error, KnowledgeBaseError
from ech0_moe.memory import ingest, ranking
from ech0_moe.memory.lexical import query_terms
from ech0_moe.memory.passage import Passage
from ech0_moe.memory.store import Store, content_id, store_op, wanted_by
from ech0_moe.owners import LOCAL, owner_of
from ech0_moe.routing import taught
from ech0_moe.safety import inert

__all__ = ["SEARCH_METHODS", "KnowledgeBase", "KnowledgeBaseError", "Passage"]

SEARCH_METHODS = ("fused", "dense", "lexical")
_SIDE = ThreadPoolExecutor(max_workers=2, thread_name_prefix="ech0-kb-lexical")  # see `KnowledgeBase.search`
MAX_K = 50
_NUMBERS = re.compile(r"\d+(?:\.\d+)?")


class KnowledgeBase(Store):
    """Persistent store of document chunks and learned Q/A pairs."""

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
        owners: tuple[str, ...] | None = None,
    ) -> list[Passage]:
        """Top-k passages, optionally only those for `domain` (or for every domain), of one
        `kind` and of `owners` (an asker reads `owners.readable_by(asker)`; None: every owner).
        `fused` (default): the dense candidates (cosine within `max_distance`) and the BM25 ones
        (within `max_distance` x LEXICAL_REACH), each scored by a mix of its BM25 score and its
        cosine (`ranking.relevance`) - BM25 brings up passages whose names, numbers or rare terms
        match although the embedding ranks them low; `dense` or `lexical`: one score alone.
        Maximal Marginal Relevance with weight `diversity` then drops near-duplicates in favour
        of passages that add something."""
        if method not in SEARCH_METHODS:
            raise Ech0Error(f"unknown search method {method!r}; use {', '.join(SEARCH_METHODS)}")
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= MAX_K:
            raise Ech0Error(f"k must be a whole number from 1 to {MAX_K}, got {k!r}")
        if not (isinstance(max_distance, int | float) and math.isfinite(max_distance) and 0 <= max_distance <= 2):
            raise Ech0Error(f"max distance must be a number from 0 to 2 (cosine distance), got {max_distance!r}")
        n = self._lexical.count()  # the two indexes hold the same entries (`_align`); this count is cheaper
        if n == 0 or not query.strip():
            return []
        depth = min(max(k * 5, 20), n)
        wanted = wanted_by(domain, kind, owners)
        # BM25 and the fetch of its hits run beside the question's embedding and the dense query
        # (onnxruntime and Chroma let go of the GIL): a search takes the longer of the two paths
        narrowed = bool(domain or kind or owners is not None)
        keep = wanted if narrowed else None
        lexical = None if method == "dense" else _SIDE.submit(self._lexical_hits, query, depth, keep)
        vector = embed([query])[0]
        found: dict[str, tuple[str, dict[str, Any], float, np.ndarray]] = {}  # id -> doc, meta, distance, vector
        candidates: set[str] = set()
        bm25: dict[str, float] = {}
        if method != "lexical":
            # filtered here, not by Chroma: its metadata pre-filter scans SQLite on every query
            res = self.col.query(
                query_embeddings=[vector],
                n_results=min(depth * (3 if narrowed else 1), n),
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
            for cid, doc, meta, dist, emb in dense:
                found[cid] = (doc or "", meta or {}, float(dist), np.asarray(emb, dtype=np.float32))
            candidates.update(r[0] for r in dense)
        if lexical is not None:
            hits, fetched = lexical.result()
            for cid, (doc, meta, emb) in fetched.items():
                if cid not in found:
                    found[cid] = (doc, meta, 1.0 - float(vector @ emb), emb)
            limit = float("inf") if method == "lexical" else max_distance * ranking.LEXICAL_REACH
            bm25 = {cid: score for cid, score in hits if cid in found and found[cid][2] <= limit}
            candidates.update(bm25)
        if method == "fused" and bm25:
            best = found[max(bm25, key=bm25.__getitem__)][0]
            share = ranking.lexical_share(query_terms(query), query_terms(best))
        else:
            share = 1.0 if method == "lexical" else 0.0
        relevance = ranking.relevance({cid: 1.0 - found[cid][2] for cid in candidates}, bm25, share)
        chosen = ranking.mmr(relevance, {cid: found[cid][3] for cid in candidates}, k, diversity)
        return [
            Passage(
                id=cid,
                text=found[cid][0],
                source=str(found[cid][1].get("source", "")),
                kind=str(found[cid][1].get("kind", "document")),
                score=round(1.0 - found[cid][2], 4),
                domain=str(found[cid][1].get("domain", "")),
                page=int(found[cid][1].get("page") or 0),
                heading=str(found[cid][1].get("heading", "")),
                owner=owner_of(found[cid][1]),
            )
            for cid in chosen
        ]

    def _lexical_hits(
        self, query: str, depth: int, keep: Callable[[dict[str, str]], bool] | None
    ) -> tuple[list[tuple[str, float]], dict[str, tuple[str, dict[str, Any], np.ndarray]]]:
        """The BM25 ranking's (id, score) pairs (of entries `keep` accepts), and each hit's text, metadata and
        vector from Chroma: all of them, since the dense ranking is not known yet when this runs
        (a few rows fetched twice, against waiting for the dense query)."""
        hits = self._lexical.search(query, depth, keep)
        if not hits:
            return [], {}
        got = self.col.get(ids=[cid for cid, _ in hits], include=["documents", "metadatas", "embeddings"])
        columns = (got["ids"], got["documents"], got["metadatas"], got["embeddings"])
        fetched = {
            cid: (doc or "", meta or {}, np.asarray(emb, dtype=np.float32))
            for cid, doc, meta, emb in zip(*columns, strict=True)  # type: ignore[call-overload]
        }
        return hits, fetched

    @store_op(writes=True)
    def learn(
        self,
        question: str,
        answer: str,
        *,
        expert: str,
        domain: str,
        mode: str,
        owner: str = LOCAL,
        duplicate_similarity: float = 0.85,
    ) -> str | None:
        """Store a question/answer pair as `owner`'s; a near-duplicate question of the same owner
        updates the earlier entry. Control-token strings are stored inert (`safety.inert`).

        Returns the entry id, or None when the answer was empty and nothing was stored.
        """
        if not question.strip() or not answer.strip():
            return None
        question, answer = inert(question.strip()), inert(answer.strip())
        # Indexed by the question alone: a paraphrased question finds it even among long documents.
        vector = embed([question])
        entry_id = self.find_duplicate(question, vector[0], duplicate_similarity, owner) or (
            "learned-" + content_id(question, "" if owner == LOCAL else owner)
        )
        meta = {
            "kind": "learned",
            "owner": owner,
            "source": f"learned:{expert}",
            "expert": expert,
            "domain": domain,
            "mode": mode,
            "question": question[:2000],
            "timestamp": time.time(),
        }
        self.upsert([entry_id], [f"Q: {question}\nA: {answer}"], [meta], embeddings=vector)
        return entry_id

    def add_paths(self, paths: Iterable[str | os.PathLike[str]], **options: Any) -> dict[str, Any]:
        """Ingest files and folders (`ingest.add_paths`)."""
        return ingest.add_paths(self, paths, **options)

    @store_op(writes=True)
    def forget(self, *, ids: Iterable[str] = (), source: str = "", owner: str | None = None) -> dict[str, int]:
        """Remove entries by id and/or every entry of a source (a file path, `learned:<expert>`, or
        `feedback`: the routing feedback), only `owner`'s when given. Returns how many entries and
        how many taught routing rows went."""
        targets = set(ids)
        rows = 0
        if source:
            wanted = str(Path(source).resolve()) if Path(source).exists() else source
            targets |= set(self.ids({"source": wanted}))
            rows = taught.forget_source(self.path, wanted, owner)  # its routing examples too
        if owner is not None and targets:
            got = self.col.get(ids=sorted(targets), include=["metadatas"])
            targets = {i for i, m in zip(got["ids"], got["metadatas"] or [], strict=True) if owner_of(m or {}) == owner}
        return {"entries": self.delete(targets), "routing_rows": rows}

    def find_duplicate(self, question: str, vector: np.ndarray, min_similarity: float, owner: str) -> str | None:
        """Id of `owner`'s learned entry asking the same thing: the two questions' embeddings
        (learned entries are indexed by their question) have cosine >= `min_similarity` and the
        same numbers (so 2+2 never overwrites 2+3). Another owner's entry is never touched."""
        n = self.count()
        if n == 0:
            return None
        res = self.col.query(
            query_embeddings=[vector],
            n_results=min(3, n),
            where={"$and": [{"kind": "learned"}, {"owner": owner}]},
            include=["metadatas", "distances"],
        )
        numbers = _NUMBERS.findall(question)
        for cid, meta, dist in zip(res["ids"][0], res["metadatas"][0], res["distances"][0], strict=True):  # type: ignore[index]
            if 1.0 - dist >= min_similarity and _NUMBERS.findall(str((meta or {}).get("question", ""))) == numbers:
                return cid
        return None

    @store_op(writes=False)
    def stats(self, owner: str | None = None) -> dict[str, Any]:
        """Entries by kind and by owner, and sources; only `owner`'s namespace when given."""
        kinds: Counter[str] = Counter()
        owners: Counter[str] = Counter()
        sources: set[str] = set()
        for _, meta in self.entries():
            if owner is None or owner_of(meta) == owner:
                kinds[str(meta.get("kind", "document"))] += 1
                owners[owner_of(meta)] += 1
                sources.add(str(meta.get("source", "")))
        report = {
            "path": str(self.path),
            "entries": sum(kinds.values()),
            "by_kind": dict(kinds),
            "by_owner": dict(owners),
            "sources": len(sources),
        }
        report |= {"namespace": owner} if owner is not None else {}
        return report | ({"read_only": self.read_only} if self.read_only else {})
