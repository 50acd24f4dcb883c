"""What the graph needs from an expert pool (`Pool`), and what `batch`, the benchmarks and the CLI
also read and do with one (`ManagedPool`).

Two pools satisfy both: `local.ExpertPool` (experts placed in this process: llama.cpp in process,
or a server's model) and `ray_serve.RayPool` (experts placed in a Ray Serve application);
`make_pool` picks one for a config.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

from ech0_moe.serving.records import Acquired, Choice, Message, Reply, SwapEvent

if TYPE_CHECKING:  # the config imports this wing's records: nothing above them at import time
    from ech0_moe.config import ExpertSpec, PoolConfig

ASSUMED_LOAD_BYTES_PER_S = 1e9  # before a model's first load, its load time is guessed from its size at this rate


def serving_order(keys: Sequence[str], resident: set[str]) -> list[int]:
    """Indices of `keys` (each request's model) in the order to serve them with the fewest swaps:
    those on a resident model first, then grouped by model in order of first appearance (the
    ensemble's turns and `batch` both use it)."""
    first = {k: keys.index(k) for k in keys}
    return sorted(range(len(keys)), key=lambda i: (keys[i] not in resident, first[keys[i]], i))


class Pool(Protocol):
    """What the graph's nodes call: make an expert resident within the budget, and answer with it."""

    specs: dict[str, ExpertSpec]

    def loaded_experts(self) -> list[str]: ...

    def is_loaded(self, name: str) -> bool: ...

    def expected_bytes(self, name: str) -> int: ...

    def expected_load_seconds(self, name: str) -> float: ...

    def serving_order(self, experts: Sequence[str]) -> list[int]: ...

    def ensure_loaded(self, name: str) -> Acquired: ...

    def chat(
        self, name: str, messages: list[Message], max_tokens: int | None = None, timeout: float | None = None
    ) -> tuple[Reply, Acquired]: ...

    def choose(
        self, name: str, messages: list[Message], n_choices: int, timeout: float | None = None
    ) -> tuple[Choice, Reply, Acquired]: ...


class ManagedPool(Pool, Protocol):
    """A pool as its owner sees it: the budget, the swaps so far, how many experts `batch` may
    serve at once (`lanes`) and how many questions it keeps in flight per lane (`queue_depth`)."""

    config: PoolConfig
    budget: int
    events: list[SwapEvent]
    lanes: int
    queue_depth: int

    @property
    def swaps(self) -> int: ...

    @property
    def peak_loaded_bytes(self) -> int: ...

    def stats(self) -> dict[str, Any]: ...

    def unload_all(self) -> None: ...
