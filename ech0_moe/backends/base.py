"""The contract between the expert pool and a model runtime."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any, Protocol

from ech0_moe.backends.chat_models import Deadline, Reply
from ech0_moe.config import ExpertSpec

Message = dict[str, str]


@dataclass
class LoadedModel:
    """A model resident in memory, shared by every expert whose `model_key` matches."""

    key: str
    handle: Any
    size_bytes: int
    load_seconds: float
    lock: threading.Lock = field(default_factory=threading.Lock)
    users: int = 0
    last_used: float = 0.0
    device: str = "local"
    hold_until: float = 0.0  # after `ensure_loaded`: kept until then for the answer that follows
    expected: int = 0  # answers expected after `ensure_loaded`s (the hold ends when none is)

    def held(self, now: float) -> bool:
        """Kept for an answer that an `ensure_loaded` announced (at most until `hold_until`)."""
        return self.expected > 0 and self.hold_until > now


class Backend(Protocol):
    """Load, unload and chat. `load` returns (handle, measured size in bytes)."""

    name: str

    def load(self, spec: ExpertSpec) -> tuple[Any, int]: ...

    def unload(self, spec: ExpertSpec, handle: Any) -> None: ...

    def chat(
        self, spec: ExpertSpec, handle: Any, messages: list[Message], max_tokens: int, deadline: Deadline | None
    ) -> Reply:
        """Answer through a LangChain chat model (so LangGraph can stream its tokens), within `deadline`."""
        ...

    def score_letters(self, spec: ExpertSpec, handle: Any, messages: list[Message], letters: str) -> list[float] | None:
        """Log-probability of each letter as the first token of the answer to `messages`; None
        when the runtime cannot tell (the pool then reads a letter from a short answer)."""
        ...

    def estimate_size(self, spec: ExpertSpec) -> int:
        """Bytes the model will need, when experts.yaml gives no size."""
        ...

    def resident(self, spec: ExpertSpec) -> dict[str, int] | None:
        """Models resident where `spec` lives, by name -> bytes; None when only this process knows."""
        ...

    def adopt(self, spec: ExpertSpec) -> Any:
        """A handle for a model someone else already loaded (see `resident`)."""
        ...
