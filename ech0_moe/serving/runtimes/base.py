"""The one contract between a pool and a model runtime (`Runtime`)."""

from __future__ import annotations

from typing import Any, Protocol

from ech0_moe.config import ExpertSpec
from ech0_moe.serving.records import Message, Reply
from ech0_moe.serving.runtimes.chat_models import Deadline


class Runtime(Protocol):
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

    def models(self, spec: ExpertSpec) -> list[str] | None:
        """The model names where `spec` lives offers (a server's list, for `validate`); None for
        a runtime that reads a model file."""
        ...
