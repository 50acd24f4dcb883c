"""The shape of `experts.yaml`: the pool, its experts and its settings, as typed records.

`reader.py` reads and checks a file into these; nothing here reads a file.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ech0_moe.errors import ConfigError, shown
from ech0_moe.serving.records import PLACEMENTS, RUNTIMES

BACKENDS: tuple[str, ...] = ("llamacpp", "ollama", "ray")  # older files' one key for both (`reader`)
RAY_RUNTIMES: tuple[str, ...] = ("llamacpp", "ollama")  # what a Ray replica runs an expert with
DEFAULT_OLLAMA_HOST = RUNTIMES["ollama"].default_host
__all__ = ["BACKENDS", "DEFAULT_OLLAMA_HOST", "PLACEMENTS", "RAY_RUNTIMES", "RUNTIMES"]

_UNITS = {
    "": 1,
    "B": 1,
    "KB": 10**3,
    "MB": 10**6,
    "GB": 10**9,
    "TB": 10**12,
    "KIB": 2**10,
    "MIB": 2**20,
    "GIB": 2**30,
    "TIB": 2**40,
}
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*$")


MAX_SIZE = 2**50  # 1 PiB: anything larger is a typo, not a machine


def parse_size(value: Any, where: str) -> int:
    """Parse ``20GB``, ``150 MiB`` or a plain integer into bytes (> 0 and finite)."""
    size: float | None = None
    if isinstance(value, int | float) and not isinstance(value, bool):
        size = value
    elif isinstance(value, str):
        m = _SIZE_RE.match(value)
        if m and m.group(2).upper() in _UNITS:
            size = float(m.group(1)) * _UNITS[m.group(2).upper()]
    if size is None or not math.isfinite(size):
        raise ConfigError(f"{where}: expected a size such as '20GB', got {shown(value)}")
    if not 1 <= size <= MAX_SIZE:  # 0.5 would be 0 bytes
        raise ConfigError(f"{where}: must be more than 0 and at most 1PiB, got {shown(value)} (at least 1 byte)")
    return int(size)


def format_size(n: int | float) -> str:
    """Human-readable bytes, decimal units (``98.2MB``)."""
    for unit, div in (("GB", 10**9), ("MB", 10**6), ("KB", 10**3)):
        if abs(n) >= div:
            return f"{n / div:.1f}{unit}"
    return f"{int(n)}B"


def ollama_model_name(name: str) -> str:
    """Ollama's canonical model name: a missing tag means ':latest'."""
    return name if ":" in name.rsplit("/", 1)[-1] else f"{name}:latest"


@dataclass(frozen=True)
class ExpertSpec:
    """One expert: a model plus the system prompt and routing text that make it a specialist."""

    name: str
    domain: str
    runtime: str  # what serves it (`records.RUNTIMES`): llamacpp, ollama, openai
    model: str
    system_prompt: str
    description: str
    examples: tuple[str, ...] = ()
    keywords: tuple[str, ...] = ()
    size_bytes: int = 0
    host: str = ""  # a server runtime's URL (OpenAI-compatible: its base URL, .../v1)
    n_ctx: int = 2048
    max_tokens: int = 128
    temperature: float = 0.0
    repeat_penalty: float = 1.1  # > 1 discourages repeating itself: small models loop until their cap otherwise
    timeout: float = 120.0  # a server: seconds without a new token (before it: a byte) until it counts as hung
    placement: str = "local"  # where the pool places it: this process ("local") or a Ray Serve application ("ray")
    api_key_env: str = ""  # a server runtime: the environment variable holding its API key (never the key)

    @property
    def model_key(self) -> str:
        """Experts with the same key share one loaded model (no swap between them)."""
        return f"{self.runtime}|{self.host}|{self.model}"

    @property
    def device(self) -> str:
        """Where the model lives and whose memory budget it uses: this process, a server (its URL),
        or a Ray Serve application (each of its replicas has its own budget)."""
        if self.placement == "ray":
            return "ray"
        entry = RUNTIMES.get(self.runtime)
        return self.host if entry is not None and entry.kind == "server" else "local"

    @property
    def routing_texts(self) -> list[str]:
        """What the router learns this expert from: its description and examples."""
        return [t for t in (self.description, *self.examples) if t]


@dataclass(frozen=True)
class RouterSettings:
    """`router:` in experts.yaml: the fitted model and the decision thresholds."""

    model: str = ""  # .npz from `ech0-moe router fit --out`; empty = fitted to the pool (and cached) on first use
    data: str = ""  # JSONL of labelled questions (`question` + `expert` or `domain`) the router also learns from
    # below this top score the general expert answers; None: the fitted model's floor (chosen on data)
    min_confidence: float | None = None
    # stay on a loaded expert within this of the best: fewer swaps, same accuracy (docs/routing.md)
    stay_margin: float = 0.2
    # plus this much margin per second the avoided load is expected to take: the score (probability)
    # you would give up to save one second of loading; 0 = the margin alone decides
    stay_per_second: float = 0.0


DEFAULT_FAIRNESS_S = 60.0  # both pools: how long an expert may wait unserved behind another


# the numeric `ray:` settings and their allowed ranges (also `bench ray --fairness`)
RAY_BOUNDS: dict[str, tuple[float, float]] = {
    "replicas": (1, 1024),
    "num_cpus": (0, 1024),
    "num_gpus": (0, 64),
    "max_ongoing_requests": (1, 10_000),
    "threads": (0, 1024),
    "timeout": (0.1, 86_400),
    "fairness": (0, 86_400),
}


@dataclass(frozen=True)
class RaySettings:
    """`ray:` in experts.yaml: the Ray Serve application that serves every `backend: ray` expert."""

    address: str = "auto"  # `ray.init` address: auto (a cluster started on this machine), ray://head:10001, ...
    app: str = "ech0-moe"  # the Serve application's name
    replicas: int = 2  # replicas of the expert deployment; each holds one expert at a time
    replica_budget: int = 0  # bytes one replica may hold (0 = memory_budget)
    num_cpus: float = 1.0  # per replica
    num_gpus: float = 0.0  # per replica (1 on a GPU cluster: one GPU per replica)
    max_ongoing_requests: int = 64  # per replica; Ray's default (5) spreads a cold burst over every replica
    threads: int = 0  # llama.cpp threads per replica (0 = num_cpus, at least 1)
    timeout: float = 600.0  # seconds any one request to the application may take, by the clock (load + answer)
    # concurrent requests are grouped by expert: a replica switches expert when its expert's queue
    # is empty, or when another expert has waited this many seconds (0 = no grouping: Ray's
    # multiplexing routes each request on its own)
    fairness: float = DEFAULT_FAIRNESS_S


@dataclass(frozen=True)
class PoolConfig:
    """The whole `experts.yaml`: a memory budget and the experts."""

    path: Path
    memory_budget: int
    experts: tuple[ExpertSpec, ...]
    general_expert: str
    router: RouterSettings = field(default_factory=RouterSettings)
    host_budgets: dict[str, int] = field(default_factory=dict)
    ray: RaySettings | None = None  # set when the experts are placed in Ray Serve (`placement: ray`)

    @property
    def placement(self) -> str:
        """Where the pool's experts run: "local" (this process, or the servers they name) or "ray"."""
        return "ray" if self.ray is not None else "local"

    def budget_for(self, device: str) -> int:
        """The memory budget of a device: `memory_budget` locally, `hosts:` (or the same) per Ollama
        host, `ray.replica_budget` (or the same) per Ray replica."""
        return self.host_budgets.get(device, self.memory_budget)

    def expert(self, name: str) -> ExpertSpec:
        for e in self.experts:
            if e.name == name:
                return e
        raise ConfigError(f"unknown expert {shown(name)}; known: {', '.join(self.names)}")

    @property
    def names(self) -> list[str]:
        return [e.name for e in self.experts]

    def ray_settings(self) -> RaySettings:
        """The `ray:` settings (`backend: ray` pools); a `ConfigError` for any other pool."""
        if self.ray is None:
            raise ConfigError(f"{self.path}: no `ray:` settings and no expert has placement ray")
        return self.ray
