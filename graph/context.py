"""Runtime context: settings that are fixed for a run, not part of the state.

Pass it with ``graph.invoke(inputs, context=Context(...))``; every field falls back
to an ``ECH0_<FIELD>`` environment variable, then to its default. Values are checked
when the context is made: a bad one is an `InputError` (a `ValueError`) naming it.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field, fields
from typing import Any, Literal, get_args

from ech0_moe.compressor import COMPRESSION_METHODS
from ech0_moe.errors import InputError, shown
from ech0_moe.owners import check_owner

Mode = Literal["optimized", "fast", "basic", "ensemble"]
MODES: tuple[str, ...] = get_args(Mode)
VoteJudge = Literal["rules", "expert"]
VOTE_JUDGES: tuple[str, ...] = get_args(VoteJudge)
MAX_TOP_K = 50
MAX_ENSEMBLE_K = 64
MAX_TOKENS_LIMIT = 32_768


@dataclass(kw_only=True)
class Context:
    """Settings for one run of the ECH0 MoE graph."""

    # Empty paths are resolved where they are used (in a worker thread), not here: a server
    # makes a Context inside its event loop, where even os.getcwd() counts as blocking.
    experts_file: str = field(
        default="",
        metadata={"description": "experts.yaml; empty: ./experts.yaml if there is one, else the packaged pool."},
    )
    kb_dir: str = field(
        default="",
        metadata={"description": "Folder of the persistent Chroma knowledge base; empty: $ECH0_HOME/kb or ./.ech0/kb."},
    )
    user: str = field(
        default="",
        metadata={
            "description": "Who is asking: what the run learns is theirs, and it reads only theirs and the shared "
            "namespace; empty: the LangGraph server's authenticated user, else 'local'."
        },
    )
    mode: Mode = field(
        default="optimized",
        metadata={"description": "Path when the input names none: optimized | fast | basic | ensemble."},
    )
    top_k: int = field(
        default=4, metadata={"description": f"How many passages retrieve returns at most (1-{MAX_TOP_K})."}
    )
    max_distance: float = field(
        default=0.65, metadata={"description": "Cosine distance (0-2) above which a retrieved passage is dropped."}
    )
    compression_target: float = field(
        default=0.5,
        metadata={"description": "Requested kept fraction of prompt tokens, in (0, 1]: 0.3 = shrink by 70%."},
    )
    prefetch: bool = field(
        default=True,
        metadata={"description": "Load the routed expert in parallel with retrieve/compress."},
    )
    filter_by_domain: bool = field(
        default=False,
        metadata={"description": "Retrieve only passages of the routed expert's domain (or of no domain)."},
    )
    compression_method: str = field(
        default="extractive",
        metadata={"description": "extractive | llm (general expert, fact-checked) | llmlingua (if installed)."},
    )
    ensemble_k: int = field(
        default=3, metadata={"description": f"How many experts the ensemble path asks (1-{MAX_ENSEMBLE_K})."}
    )
    max_tokens: int = field(
        default=0, metadata={"description": "Answer length cap in tokens; 0 = each expert's own max_tokens."}
    )
    length_hint: bool = field(
        default=True,
        metadata={"description": "Tell each expert its answer budget in words, so a short answer finishes."},
    )
    vote_judge: VoteJudge = field(
        default="rules",
        metadata={
            "description": "Ensemble, open questions: rules (answers that mean the same pool their weight) | "
            "expert (an answering expert still loaded names the most consistent answer; no extra load)."
        },
    )
    answer_timeout: float = field(
        default=600.0,
        metadata={
            "description": "Seconds an answer may take to generate; then it ends with an error (nothing learned)."
        },
    )

    @classmethod
    def of(cls, **options: Any) -> Context:
        """A context from whichever of `options` are its fields and not None (command-line
        arguments, a form); the rest fall back as usual."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in options.items() if k in names and v is not None})

    def __post_init__(self) -> None:
        for f in fields(self):
            env = os.environ.get(f"ECH0_{f.name.upper()}")
            if env is not None and getattr(self, f.name) == f.default:
                setattr(self, f.name, _parse_env(f.name, env, f.default))
        self.check()

    def check(self) -> None:
        """Raise `InputError` naming the first setting out of range."""
        if self.user:
            check_owner(self.user)
        if self.mode not in MODES:
            raise InputError(f"unknown mode {shown(self.mode)}; use one of {', '.join(MODES)}")
        if self.vote_judge not in VOTE_JUDGES:
            raise InputError(f"unknown vote_judge {shown(self.vote_judge)}; use one of {', '.join(VOTE_JUDGES)}")
        _check_int("top_k", self.top_k, 1, MAX_TOP_K)
        _check_int("ensemble_k", self.ensemble_k, 1, MAX_ENSEMBLE_K)
        _check_int("max_tokens", self.max_tokens, 0, MAX_TOKENS_LIMIT)
        _check_float("max_distance", self.max_distance, 0.0, 2.0, low_open=False)
        _check_float("compression_target", self.compression_target, 0.0, 1.0, low_open=True)
        _check_float("answer_timeout", self.answer_timeout, 0.0, 86_400.0, low_open=True)
        if self.compression_method not in COMPRESSION_METHODS:
            raise InputError(
                f"unknown compression_method {shown(self.compression_method)}; use {', '.join(COMPRESSION_METHODS)}"
            )


def _parse_env(name: str, raw: str, default: Any) -> Any:
    try:
        if isinstance(default, bool):
            word = raw.strip().lower()
            if word not in ("1", "true", "yes", "on", "0", "false", "no", "off"):
                raise ValueError(word)
            return word in ("1", "true", "yes", "on")
        return type(default)(raw)
    except ValueError:
        raise InputError(f"ECH0_{name.upper()}={shown(raw)}: expected a {type(default).__name__}") from None


def _check_int(name: str, value: object, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InputError(f"{name} must be a whole number from {low} to {high}, got {shown(value)}")


def _check_float(name: str, value: object, low: float, high: float, *, low_open: bool) -> None:
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if ok:
        ok = (low < value if low_open else low <= value) and value <= high  # type: ignore[operator]
    if not ok:
        bound = f"more than {low:g} and at most {high:g}" if low_open else f"from {low:g} to {high:g}"
        raise InputError(f"{name} must be {bound}, got {shown(value)}")
