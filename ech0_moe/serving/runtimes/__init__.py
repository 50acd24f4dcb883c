"""Model runtimes, made by name from the one table of them (`records.RUNTIMES`); each class is
imported on first use (llama.cpp is heavy)."""

from __future__ import annotations

import importlib

from ech0_moe.errors import ConfigError
from ech0_moe.serving.records import RUNTIMES
from ech0_moe.serving.runtimes.base import Runtime


def make_runtime(name: str) -> Runtime:
    """The runtime registered under `name` in `RUNTIMES`."""
    if name not in RUNTIMES:
        raise ConfigError(f"unknown runtime {name!r} (use {', '.join(RUNTIMES)})")
    module, _, attr = RUNTIMES[name].target.partition(":")
    return getattr(importlib.import_module(module), attr)()


__all__ = ["Runtime", "make_runtime"]
