"""The one shared, typed state every node reads and writes.

`InputState` is what callers pass (`{"query": ...}`), `OutputState` is what
they get back; `State` adds the working fields. Fields written by parallel
branches have reducers: ensemble answers are concatenated and per-node
timings are merged; `prepare` resets both at the start of every run, so a
thread that is asked again (Studio, checkpointer) never shows stale values.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Annotated, Any

from ech0_moe.graph.context import Mode


def merge_timings(left: dict[str, float] | None, right: dict[str, float] | None) -> dict[str, float]:
    """Reducer: each node adds its own entries (timings, token counts); `None` resets (a new run on the same thread)."""
    return {} if right is None else {**(left or {}), **right}


def add_answers(left: list[Any] | None, right: list[Any] | None) -> list[Any]:
    """Reducer: parallel branches append (ensemble answers, warnings: `operator.add`); `None` resets."""
    return [] if right is None else [*(left or []), *right]


@dataclass(kw_only=True)
class InputState:
    """What a caller provides."""

    query: str = field(default="", metadata={"description": "The user's question."})
    mode: Mode | None = field(
        default=None,
        metadata={"description": "optimized | fast | basic | ensemble; none = the context's default mode."},
    )
    expert: str = field(
        default="",
        metadata={"description": "Force this expert (the router still reports its scores); empty = route."},
    )
    choices: list[str] = field(
        default_factory=list,
        metadata={"description": "Multiple choice: the options; the expert picks one (empty = an open question)."},
    )


@dataclass(kw_only=True)
class OutputState:
    """What a caller gets back: the answer and how it was produced."""

    solution: str = field(default="", metadata={"description": "The answer (empty when it failed: see error)."})
    expert_used: str = field(default="", metadata={"description": "The expert that answered."})
    mode: str = field(default="", metadata={"description": "The path that ran."})
    swapped: bool = field(default=False, metadata={"description": "Whether a model had to be loaded."})
    load_seconds: float = field(default=0.0, metadata={"description": "Seconds spent loading models."})
    served_by: str = field(
        default="",
        metadata={"description": "Where the expert ran: local (in process), an Ollama host, or ray:<replica>@<node>."},
    )
    route_scores: dict[str, float] = field(
        default_factory=dict, metadata={"description": "The router's score for every expert."}
    )
    route_confidence: float = field(default=0.0, metadata={"description": "The best expert's score."})
    route_reason: str = field(default="", metadata={"description": "Why this expert (fallback, staying, forced)."})
    route_stayed: bool = field(default=False, metadata={"description": "Stayed on a resident expert to skip a load."})
    compression_ratio: float = field(
        default=1.0, metadata={"description": "Achieved kept fraction of the prompt (1.0 = unchanged)."}
    )
    compression_method: str = field(default="", metadata={"description": "How the prompt was compressed."})
    retrieved_contexts: list[dict[str, Any]] = field(
        default_factory=list, metadata={"description": "Retrieved passages: text, source, kind, score, id."}
    )
    truncated: bool = field(default=False, metadata={"description": "The answer stopped at the token cap."})
    choice: int = field(default=-1, metadata={"description": "Multiple choice: the picked option's index (-1: none)."})
    choice_scores: list[float] = field(
        default_factory=list, metadata={"description": "Multiple choice: each option's log-probability (loglik)."}
    )
    choice_method: str = field(
        default="", metadata={"description": "Multiple choice: loglik (log-probabilities) or letter (read from text)."}
    )
    tokens: Annotated[dict[str, int], merge_timings] = field(
        default_factory=dict,
        metadata={
            "description": "prompt_before_compression / prompt_after_compression (words), prompt and "
            "completion (model tokens)."
        },
    )
    responses: Annotated[list[dict[str, Any]], add_answers] = field(
        default_factory=list,
        metadata={"description": "Ensemble: each expert's answer, route score, vote key, skipped or error."},
    )
    votes: dict[str, float] = field(default_factory=dict, metadata={"description": "Ensemble: weight per vote key."})
    judged_by: str = field(
        default="",
        metadata={"description": "Ensemble: the loaded expert that picked the most consistent answer (vote_judge)."},
    )
    timings: Annotated[dict[str, float], merge_timings] = field(
        default_factory=dict, metadata={"description": "Seconds per node (answer:<expert> per ensemble branch)."}
    )
    learned_id: str = field(
        default="", metadata={"description": "The knowledge-base entry the answer was learned as (empty: not learned)."}
    )
    error: str = field(default="", metadata={"description": "Empty unless the answer failed after its retries."})
    warnings: Annotated[list[str], add_answers] = field(
        default_factory=list,
        metadata={"description": "What went wrong without stopping the answer (e.g. the knowledge base)."},
    )


def result_of(values: dict[str, Any]) -> dict[str, Any]:
    """Every `OutputState` field of a run's values (defaults for those the path never set)."""
    defaults = asdict(OutputState())
    return {k: values.get(k, v) for k, v in defaults.items()}


@dataclass(kw_only=True)
class State(InputState, OutputState):
    """Working state shared by all nodes."""

    prompt: str = ""
    domain: str = ""
    candidates: list[str] = field(default_factory=list)
    ensemble_id: str = ""


@dataclass(kw_only=True)
class ExpertTask:
    """The payload `Send` gives each ensemble branch."""

    query: str
    prompt: str
    expert: str
    order: int
    size: int
    ensemble_id: str
    route_score: float = 0.0
    choices: list[str] = field(default_factory=list)
