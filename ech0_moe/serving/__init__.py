"""The serving wing: everything between `services.py` and a model.

From the floor up:
- `records`: plain records (messages, replies, acquired and swap events, choices, loaded models)
  and the table of runtimes by name (`RUNTIMES`), no LangChain;
- `runtimes`: one `Runtime` per way of reaching a model (llama.cpp in process, Ollama, any
  OpenAI-compatible server), behind one protocol, made by name (`make_runtime`);
- `local` and `ray_serve`: the pools that place experts, in this process or in a Ray Serve
  application;
- here, at its face: `Pool` (what the graph calls), `ManagedPool` (what `batch`, the benchmarks
  and the CLI also read) and `make_pool`, one `match` on the pool's placement.
"""

from __future__ import annotations

import importlib.util
from typing import TYPE_CHECKING

from ech0_moe.errors import ConfigError
from ech0_moe.serving.pool import ManagedPool, Pool, serving_order
from ech0_moe.serving.records import Acquired, SwapEvent

if TYPE_CHECKING:  # the config imports this wing's records: nothing above them at import time
    from ech0_moe.config import PoolConfig
    from ech0_moe.serving.runtimes import Runtime

__all__ = ["Acquired", "ManagedPool", "Pool", "SwapEvent", "make_pool", "serving_order"]


def make_pool(config: PoolConfig, runtimes: dict[str, Runtime] | None = None) -> ManagedPool:
    """The pool that places `config`'s experts: in this process (`runtimes` replaces runtimes by
    name, e.g. a fake in tests) or in the Ray Serve application (`placement: ray`, the `ray` extra)."""
    match config.placement:
        case "ray":
            if importlib.util.find_spec("ray") is None:
                raise ConfigError(f"{config.path}: placement ray needs Ray Serve: pip install 'ech0-moe[ray]'")
            from ech0_moe.serving.ray_serve.pool import RayPool

            return RayPool(config)
        case _:
            from ech0_moe.serving.local.pool import ExpertPool

            return ExpertPool(config, runtimes)
