"""A retrieved passage: what search returns and the graph carries (no store needed to read one)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class Passage:
    """A retrieved passage (document chunk or learned answer) with its provenance."""

    id: str
    text: str
    source: str
    kind: str  # "document" | "learned"
    score: float  # 1 - cosine distance
    domain: str = ""
    page: int = 0  # a PDF's page (from 1); 0: not paged
    heading: str = ""  # the Markdown or HTML heading the chunk sits under
    owner: str = ""  # the namespace it belongs to (`owners`): an asker's own, or the shared one

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)
