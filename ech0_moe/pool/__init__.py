"""Expert pools behind one protocol (`Pool`), picked for a config by `make_pool`."""

from __future__ import annotations

import importlib.util
from typing import TYPE_CHECKING

from ech0_moe.config import PoolConfig
from ech0_moe.errors import ConfigError
from ech0_moe.pool.base import Acquired, Pool, SwapEvent, serving_order
from ech0_moe.pool.local import ExpertPool

if TYPE_CHECKING:
    from ech0_moe.backends import Backend

__all__ = ["Acquired", "ExpertPool", "Pool", "SwapEvent", "make_pool", "serving_order"]


def make_pool(config: PoolConfig, backends: dict[str, Backend] | None = None) -> Pool:
    """The pool that serves `config`: in process (llama.cpp, Ollama hosts; `backends` replaces
    runtimes, e.g. a fake in tests) or the Ray Serve application (`backend: ray`, the `ray` extra)."""
    match "ray" if config.ray is not None else "embedded":
        case "ray":
            if importlib.util.find_spec("ray") is None:
                raise ConfigError(f"{config.path}: backend ray needs Ray Serve: pip install 'ech0-moe[ray]'")
            from ech0_moe.serving.pool import RayPool

            return RayPool(config)
        case _:
            return ExpertPool(config, backends)
