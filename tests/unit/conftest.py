"""Unit-test doubles: an in-memory fake backend injected through the pool, a keyword
router and an in-memory knowledge base. No model, no server, no Chroma on disk."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ech0_moe.bench.recorder import RecordingRuntime, canned_reply
from ech0_moe.config import ExpertSpec, PoolConfig, load_config
from ech0_moe.errors import BackendError
from ech0_moe.memory.passage import Passage
from ech0_moe.routing.router import Router
from ech0_moe.services import Services
from ech0_moe.serving.records import Message, Reply
from ech0_moe.serving.runtimes.chat_models import Deadline

POOL = """\
memory_budget: 100MB
defaults: {backend: llamacpp, size: 60MB}
experts:
  - {name: math, domain: mathematics, model: a.gguf, system_prompt: Math., description: Mathematics.,
     keywords: [equation, integral, solve]}
  - {name: physics, domain: physics, model: a.gguf, system_prompt: Physics., description: Physics.,
     keywords: [force, orbit, light]}
  - {name: biology, domain: biology, model: b.gguf, system_prompt: Biology., description: Biology.,
     keywords: [cell, dna, heart]}
  - {name: general, domain: general, model: b.gguf, system_prompt: General., description: Anything else.}
"""


class FakeRuntime(RecordingRuntime):
    """Loads instantly and answers '<expert>: <last word of the prompt>'; can fail on demand."""

    name = "fake"

    def __init__(self) -> None:
        super().__init__()
        self.loads: list[str] = []
        self.unloads: list[str] = []
        self.prompts: list[tuple[str, str]] = []  # type: ignore[assignment]  # (expert, prompt)
        self.fail: list[BackendError] = []  # raised by the next chats, one each
        self.reply: Callable[[ExpertSpec, str], str] = lambda spec, prompt: f"{spec.name}: {prompt.split()[-1]}"
        # multiple choice: each option's log-probability per expert; None = no log-probabilities (read a letter)
        self.letter_scores: Callable[[ExpertSpec, int], list[float]] | None = None

    def load(self, spec: ExpertSpec) -> tuple[Any, int]:
        self.loads.append(spec.name)
        return object(), spec.size_bytes

    def unload(self, spec: ExpertSpec, handle: Any) -> None:
        self.unloads.append(spec.name)

    def chat(
        self, spec: ExpertSpec, handle: Any, messages: list[Message], max_tokens: int, deadline: Deadline | None
    ) -> Reply:
        prompt = messages[-1]["content"]
        self.prompts.append((spec.name, prompt))
        self.systems.append(next((m["content"] for m in messages if m["role"] == "system"), ""))
        if self.fail:
            raise self.fail.pop(0)
        # a LangChain chat model, as the real backends use: LangGraph streams its tokens
        return canned_reply(self.reply(spec, prompt), prompt, max_tokens, deadline)

    def score_letters(self, spec: ExpertSpec, handle: Any, messages: list[Message], letters: str) -> list[float] | None:
        return self.letter_scores(spec, len(letters)) if self.letter_scores else None


class MemoryKB:
    """The knowledge base's search/learn contract over a list: word overlap as the score."""

    def __init__(self) -> None:
        self.entries: list[dict[str, Any]] = []
        self._ids = itertools.count(1)

    def search(
        self,
        query: str,
        k: int = 4,
        *,
        max_distance: float = 0.65,
        domain: str | None = None,
        owners: tuple[str, ...] | None = None,
        **_: Any,
    ):
        words = set(query.lower().split())
        scored = []
        for e in self.entries:
            overlap = len(words & set(e["text"].lower().split())) / max(1, len(words))
            mine = owners is None or e["owner"] in owners
            if 1 - overlap <= max_distance and (not domain or e["domain"] in (domain, "")) and mine:
                score = round(overlap, 4)
                scored.append(Passage(e["id"], e["text"], e["source"], e["kind"], score, e["domain"], owner=e["owner"]))
        return sorted(scored, key=lambda p: -p.score)[:k]

    def learn(
        self, question: str, answer: str, *, expert: str, domain: str, mode: str, owner: str = "local"
    ) -> str | None:
        if not answer.strip():
            return None
        entry_id = f"learned-{next(self._ids)}"
        text = f"Q: {question}\nA: {answer}"
        self.entries.append(
            {
                "id": entry_id,
                "text": text,
                "source": f"learned:{expert}",
                "kind": "learned",
                "domain": domain,
                "owner": owner,
            }
        )
        return entry_id


@pytest.fixture
def pool_config(tmp_path: Path) -> PoolConfig:
    """Four experts over two 'files' of 60MB each; the 100MB budget holds one file."""
    for name in ("a.gguf", "b.gguf"):
        (tmp_path / name).write_bytes(b"GGUF")
    (tmp_path / "experts.yaml").write_text(POOL)
    return load_config(tmp_path / "experts.yaml")


@pytest.fixture
def fake() -> FakeRuntime:
    return FakeRuntime()


@pytest.fixture
def kb() -> MemoryKB:
    return MemoryKB()


@pytest.fixture
def services(pool_config: PoolConfig, fake: FakeRuntime, kb: MemoryKB) -> Services:
    """Real pool, keyword router, fake backend, in-memory knowledge base."""
    router = Router(pool_config, keyword_only=True)
    return Services.create(pool_config, kb, runtimes={"llamacpp": fake}, router=router)  # type: ignore[arg-type]
