"""`ech0-moe validate`: check a pool without loading a model.

Problems (exit 1, one line each): everything `experts.yaml` parsing finds (unknown keys,
sizes, missing files, budget fit, duplicate names), model files that are not GGUF, Ollama
models a reachable host does not have, and a router that cannot route (embedder
missing or a router model fitted on other features). Notes: hosts that did not answer
(their model names could not be checked).
"""

from __future__ import annotations

from pathlib import Path

from ech0_moe.backends.ollama import OllamaBackend
from ech0_moe.config import PoolConfig, check_config
from ech0_moe.errors import BackendError, Ech0Error
from ech0_moe.gguf import GGUF_MAGIC

HOST_TIMEOUT_S = 3.0


def _model_problems(config: PoolConfig) -> tuple[list[str], list[str]]:
    problems: list[str] = []
    notes: list[str] = []
    ollama = OllamaBackend(timeout=HOST_TIMEOUT_S)
    unreachable: set[str] = set()
    for e in config.experts:
        where = f"{config.path.name}: expert {e.name!r}"
        if e.backend == "llamacpp":
            with open(e.model, "rb") as fh:
                if fh.read(4) != GGUF_MAGIC:
                    problems.append(f"{where}: {e.model} is not a GGUF file")
        elif e.host not in unreachable:
            try:
                ollama.estimate_size(e)
            except BackendError as exc:
                if exc.transient or exc.silent:  # unreachable or hung: a note, not a problem of the file
                    unreachable.add(e.host)
                    notes.append(f"Ollama at {e.host} did not answer: its model names were not checked")
                else:
                    problems.append(f"{where}: {exc}")
    return problems, notes


def _router_problems(config: PoolConfig) -> list[str]:
    from ech0_moe.embeddings import get_embedder
    from ech0_moe.routing.router import Router

    try:
        get_embedder("router")
    except (Ech0Error, ImportError, OSError) as exc:
        return [f"router: the embedding router is unavailable ({exc}); it would route by keywords"]
    try:
        Router(config)
    except Ech0Error as exc:
        return [f"router: {exc}"]
    return []


def validate_pool(path: str | Path) -> tuple[list[str], list[str]]:
    """(problems, notes) for the pool in `path`; no model is loaded."""
    config, problems = check_config(path)
    if config is None:
        return problems, []
    problems, notes = _model_problems(config)
    return problems + _router_problems(config), notes
