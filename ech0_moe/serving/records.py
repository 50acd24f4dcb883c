"""The serving wing's floor: plain records that cross it, and the runtimes' names.

Everything between `services.py` and a model speaks in these: the messages a runtime is asked,
the reply it gives, what getting an expert cost (`Acquired`), each swap (`SwapEvent`), a
resident model (`LoadedModel`) and a multiple-choice pick (`Choice`). No LangChain, no runtime,
no pool is imported here, so the config, the graph and the tests can read them cheaply.

`RUNTIMES` is the one table of runtimes: a name (what `runtime:` says in experts.yaml) -> the
class that serves it, imported on first use, and whether it reads a model file on this machine
(`file`) or talks to a server (`server`: `host:` is its URL). The config reads its names from here.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

Message = dict[str, str]


@dataclass(frozen=True)
class RuntimeEntry:
    """Where a runtime's class lives ("module:Class") and what it serves from."""

    target: str
    kind: str  # "file": a model file on this machine; "server": a model behind `host`
    default_host: str = ""


RUNTIMES: dict[str, RuntimeEntry] = {
    "llamacpp": RuntimeEntry("ech0_moe.serving.runtimes.llamacpp:LlamaCppRuntime", "file"),
    "ollama": RuntimeEntry("ech0_moe.serving.runtimes.ollama:OllamaRuntime", "server", "http://127.0.0.1:11434"),
    "openai": RuntimeEntry("ech0_moe.serving.runtimes.openai:OpenAIRuntime", "server", "http://127.0.0.1:8000/v1"),
}
PLACEMENTS = ("local", "ray")  # where the pool runs its experts: this process, or a Ray Serve application


@dataclass
class Reply:
    """An expert's answer and what it cost: `truncated` when it hit the token cap."""

    text: str
    truncated: bool = False
    prompt_tokens: int = 0
    completion_tokens: int = 0


@dataclass(frozen=True)
class Acquired:
    """What getting an expert cost: whether a model was loaded (a swap) and how long it took."""

    expert: str
    swapped: bool
    load_seconds: float
    evicted: tuple[str, ...] = ()
    served_by: str = ""  # where the expert ran: "local", a server's URL, or a Ray replica


@dataclass(frozen=True)
class SwapEvent:
    at: float
    expert: str
    model_key: str
    device: str
    load_seconds: float
    evicted: tuple[str, ...]
    loaded_bytes_after: int


@dataclass(frozen=True)
class Choice:
    """The option an expert picked: its index (-1 = none readable), each option's
    log-probability ("loglik"; empty for "letter") and how it was read."""

    index: int
    scores: tuple[float, ...]
    method: str

    def text(self, choices: list[str]) -> str:
        """The pick as an answer: "B. Newton" (empty when no option could be read)."""
        letters = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
        return f"{letters[self.index]}. {choices[self.index]}" if 0 <= self.index < len(choices) else ""


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
