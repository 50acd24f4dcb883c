"""The knowledge base: documents and learned answers in a persistent Chroma collection.

Chroma runs embedded (`PersistentClient`, telemetry off) with cosine distance
and our offline MiniLM embedding function. Every write is committed by Chroma
before the call returns, so a crash later loses nothing already written.
"""

from __future__ import annotations

import hashlib
import os
import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ech0_moe.errors import Ech0Error

os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")

COLLECTION = "ech0_memory"
_NUMBERS = re.compile(r"\d+(?:\.\d+)?")


@dataclass(frozen=True)
class Context:
    """A retrieved passage with its provenance."""

    id: str
    text: str
    source: str
    kind: str  # "document" | "learned"
    score: float  # 1 - cosine distance
    domain: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def content_id(text: str, source: str = "") -> str:
    """Stable id from content: re-adding the same chunk is a no-op."""
    return hashlib.sha256(f"{source}\x00{text}".encode()).hexdigest()[:32]


class KnowledgeBase:
    """Persistent store of document chunks and learned Q/A pairs."""

    def __init__(self, path: str | os.PathLike[str], collection: str = COLLECTION) -> None:
        import chromadb
        from chromadb.config import Settings

        from ech0_moe.embeddings import MiniLMEmbeddingFunction

        self.path = Path(path)
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            probe = self.path / ".write-test"
            probe.write_text("ok")
            probe.unlink()
        except OSError as exc:
            raise Ech0Error(f"knowledge base folder {self.path} is not writable: {exc.strerror}") from None
        self._client = chromadb.PersistentClient(
            path=str(self.path), settings=Settings(anonymized_telemetry=False, allow_reset=False)
        )
        self.col = self._client.get_or_create_collection(
            collection,
            embedding_function=MiniLMEmbeddingFunction(),  # type: ignore[arg-type]
            configuration={"hnsw": {"space": "cosine"}},
        )

    def count(self) -> int:
        return self.col.count()

    def upsert(self, ids: list[str], texts: list[str], metadatas: list[dict[str, Any]]) -> None:
        if ids:
            self.col.upsert(ids=ids, documents=texts, metadatas=metadatas)  # type: ignore[arg-type]

    def search(
        self,
        query: str,
        k: int = 4,
        *,
        max_distance: float = 0.65,
        domain: str | None = None,
        kind: str | None = None,
    ) -> list[Context]:
        """Top-k passages within `max_distance` (cosine), optionally filtered by domain/kind."""
        n = self.count()
        if n == 0 or not query.strip():
            return []
        clauses: list[dict[str, Any]] = []
        if domain:
            clauses.append({"domain": {"$in": [domain, ""]}})
        if kind:
            clauses.append({"kind": kind})
        where: dict[str, Any] | None = None
        if len(clauses) == 1:
            where = clauses[0]
        elif clauses:
            where = {"$and": clauses}
        res = self.col.query(query_texts=[query], n_results=min(k, n), where=where)  # type: ignore[arg-type]
        out: list[Context] = []
        for cid, doc, meta, dist in zip(
            res["ids"][0],
            res["documents"][0],
            res["metadatas"][0],
            res["distances"][0],
            strict=True,  # type: ignore[index]
        ):
            if dist > max_distance:
                continue
            out.append(
                Context(
                    id=cid,
                    text=doc or "",
                    source=str(meta.get("source", "")),
                    kind=str(meta.get("kind", "document")),
                    score=round(1.0 - float(dist), 4),
                    domain=str(meta.get("domain", "")),
                )
            )
        return out

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
        text = f"Q: {question.strip()}\nA: {answer.strip()}"
        entry_id = self.find_duplicate(question, duplicate_similarity) or "learned-" + content_id(question.strip())
        meta = {
            "kind": "learned",
            "source": f"learned:{expert}",
            "expert": expert,
            "domain": domain,
            "mode": mode,
            "question": question.strip()[:2000],
            "timestamp": time.time(),
        }
        self.upsert([entry_id], [text], [meta])
        return entry_id

    def find_duplicate(self, question: str, min_similarity: float) -> str | None:
        """Id of a learned entry asking the same thing: embedding similarity of the two
        questions >= `min_similarity` and the same numbers (so 2+2 never overwrites 2+3)."""
        from ech0_moe.embeddings import embed

        n = self.count()
        if n == 0:
            return None
        res = self.col.query(query_texts=[question], n_results=min(3, n), where={"kind": "learned"})
        metas = res["metadatas"][0] if res["metadatas"] else []
        if not metas:
            return None
        previous = [str(m.get("question", "")) for m in metas]
        vecs = embed([question, *previous])
        numbers = _NUMBERS.findall(question)
        for cid, prev, vec in zip(res["ids"][0], previous, vecs[1:], strict=True):
            if float(vec @ vecs[0]) >= min_similarity and _NUMBERS.findall(prev) == numbers:
                return cid
        return None

    def stats(self) -> dict[str, Any]:
        got = self.col.get(include=["metadatas"])
        kinds: dict[str, int] = {}
        sources: set[str] = set()
        for meta in got["metadatas"] or []:
            kinds[str(meta.get("kind", "document"))] = kinds.get(str(meta.get("kind", "document")), 0) + 1
            sources.add(str(meta.get("source", "")))
        return {"path": str(self.path), "entries": self.count(), "by_kind": kinds, "sources": len(sources)}
