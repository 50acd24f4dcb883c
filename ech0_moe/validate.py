"""`ech0-moe validate`: check a pool without loading a model.

Problems (exit 1, one line each): everything `experts.yaml` parsing finds (unknown keys,
sizes, missing files, budget fit, duplicate names), model files that are not GGUF, models a
reachable server (Ollama, an OpenAI-compatible one) does not offer, and a router that cannot
route (embedder missing or a router model fitted on other features). Notes: what each server
offers, and servers that did not answer (their model names could not be checked).
"""

from __future__ import annotations

from pathlib import Path

from ech0_moe.config import PoolConfig, check_config
from ech0_moe.errors import BackendError, Ech0Error
from ech0_moe.gguf import GGUF_MAGIC
from ech0_moe.serving.records import RUNTIMES
from ech0_moe.serving.runtimes import make_runtime

HOST_TIMEOUT_S = 3.0


def _model_problems(config: PoolConfig) -> tuple[list[str], list[str]]:
    problems: list[str] = []
    notes: list[str] = []
    offered: dict[str, list[str] | None] = {}  # server URL -> its model names (None: it did not answer)
    for e in config.experts:
        where = f"{config.path.name}: expert {e.name!r}"
        if e.placement == "ray":
            continue  # resolved and checked on the replicas' nodes
        if RUNTIMES[e.runtime].kind == "file":
            with open(e.model, "rb") as fh:
                if fh.read(4) != GGUF_MAGIC:
                    problems.append(f"{where}: {e.model} is not a GGUF file")
            continue
        if e.host not in offered:
            runtime = make_runtime(e.runtime)
            runtime.timeout = HOST_TIMEOUT_S  # type: ignore[attr-defined]
            try:
                offered[e.host] = runtime.models(e)
            except BackendError as exc:
                if not (exc.transient or exc.silent):
                    problems.append(f"{where}: {exc}")
                offered[e.host] = None  # unreachable or hung: a note, not a problem of the file
                notes.append(f"{e.host} did not answer: its model names were not checked")
            else:
                notes.append(f"{e.host} offers: {', '.join(offered[e.host] or []) or 'no model'}")
        names = offered[e.host]
        if names is not None and e.model not in names:
            problems.append(f"{where}: model {e.model!r} is not on {e.host} (it offers: {', '.join(names) or 'none'})")
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
