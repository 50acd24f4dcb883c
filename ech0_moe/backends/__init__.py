"""Model runtimes. Each backend loads, unloads and chats with one model at a time."""

from __future__ import annotations

from ech0_moe.backends.base import Backend, LoadedModel
from ech0_moe.errors import ConfigError


def make_backend(name: str) -> Backend:
    """Create the backend registered under ``name`` (imported lazily: llama.cpp is heavy)."""
    if name == "llamacpp":
        from ech0_moe.backends.llamacpp import LlamaCppBackend

        return LlamaCppBackend()
    if name == "ollama":
        from ech0_moe.backends.ollama import OllamaBackend

        return OllamaBackend()
    raise ConfigError(f"unknown backend {name!r}")


__all__ = ["Backend", "LoadedModel", "make_backend"]
