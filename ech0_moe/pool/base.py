"""What the graph, `batch` and the CLI need from an expert pool (`Pool`), and the records it returns.

Two pools satisfy it: `ExpertPool` (in process: llama.cpp and Ollama experts) and Ray Serve's
`RayPool` (`ech0_moe.serving`); `make_pool` picks one for a config.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from ech0_moe.backends.base import Message
from ech0_moe.backends.chat_models import Reply
from ech0_moe.choices import Choice
from ech0_moe.config import ExpertSpec, PoolConfig

ASSUMED_LOAD_BYTES_PER_S = 1e9  # before a model's first load, its load time is guessed from its size at this rate


@dataclass(frozen=True)
class Acquired:
    """What getting an expert cost: whether a model was loaded (a swap) and how long it took."""

    expert: str
    swapped: bool
    load_seconds: float
    evicted: tuple[str, ...] = ()
    served_by: str = ""  # where the expert ran: "local", an Ollama host, or a Ray replica


@dataclass(frozen=True)
class SwapEvent:
    at: float
    expert: str
    model_key: str
    device: str
    load_seconds: float
    evicted: tuple[str, ...]
    loaded_bytes_after: int


def serving_order(keys: Sequence[str], resident: set[str]) -> list[int]:
    """Indices of `keys` (each request's model) in the order to serve them with the fewest swaps:
    those on a resident model first, then grouped by model in order of first appearance (the
    ensemble's turns and `batch` both use it)."""
    first = {k: keys.index(k) for k in keys}
    return sorted(range(len(keys)), key=lambda i: (keys[i] not in resident, first[keys[i]], i))


class Pool(Protocol):
    """An expert pool: makes experts resident within a budget and answers with them."""

    config: PoolConfig
    budget: int
    specs: dict[str, ExpertSpec]
    events: list[SwapEvent]
    lanes: int  # experts `batch` serves at once
    queue_depth: int  # questions `batch` keeps in flight per lane

    def loaded_experts(self) -> list[str]: ...

    def is_loaded(self, name: str) -> bool: ...

    def expected_bytes(self, name: str) -> int: ...

    def expected_load_seconds(self, name: str) -> float: ...

    def serving_order(self, experts: Sequence[str]) -> list[int]: ...

    @property
    def swaps(self) -> int: ...

    @property
    def peak_loaded_bytes(self) -> int: ...

    def stats(self) -> dict[str, Any]: ...

    def ensure_loaded(self, name: str) -> Acquired: ...

    def chat(
        self, name: str, messages: list[Message], max_tokens: int | None = None, timeout: float | None = None
    ) -> tuple[Reply, Acquired]: ...

    def choose(
        self, name: str, messages: list[Message], n_choices: int, timeout: float | None = None
    ) -> tuple[Choice, Reply, Acquired]: ...

    def unload_all(self) -> None: ...
