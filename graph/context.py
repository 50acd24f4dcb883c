"""Runtime context: settings that are fixed for a run, not part of the state.

Pass it with ``graph.invoke(inputs, context=Context(...))``; every field
falls back to an ``ECH0_<FIELD>`` environment variable, then to its default.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from pathlib import Path

from ech0_moe.services import Services, get_services

PROJECT_DIR = Path(__file__).resolve().parent.parent


@dataclass(kw_only=True)
class Context:
    """Settings for one run of the ECH0 MoE graph."""

    experts_file: str = field(
        default=str(PROJECT_DIR / "experts.yaml"),
        metadata={"description": "Path to experts.yaml: the memory budget and the experts."},
    )
    kb_dir: str = field(
        default=str(PROJECT_DIR / ".ech0" / "kb"),
        metadata={"description": "Folder of the persistent Chroma knowledge base."},
    )
    mode: str = field(
        default="optimized",
        metadata={"description": "Default path when the input sets none: optimized | fast | basic | ensemble."},
    )
    top_k: int = field(default=4, metadata={"description": "How many contexts retrieve returns at most."})
    max_distance: float = field(
        default=0.65, metadata={"description": "Cosine distance above which a retrieved context is dropped."}
    )
    compression_ratio: float = field(
        default=0.5, metadata={"description": "Target kept fraction of prompt tokens (0.3 = shrink by 70%)."}
    )
    prefetch: bool = field(
        default=True,
        metadata={"description": "Load the routed expert in parallel with retrieve/compress."},
    )
    filter_by_domain: bool = field(
        default=False,
        metadata={"description": "Retrieve only contexts of the routed expert's domain (or of no domain)."},
    )
    compression_method: str = field(
        default="extractive",
        metadata={"description": "extractive | llm (general expert, fact-checked) | llmlingua (if installed)."},
    )
    ensemble_k: int = field(default=3, metadata={"description": "How many experts the ensemble path asks."})
    max_tokens: int = field(
        default=0, metadata={"description": "Answer length cap in tokens; 0 = each expert's own max_tokens."}
    )

    def __post_init__(self) -> None:
        for f in fields(self):
            if getattr(self, f.name) != f.default:
                continue
            env = os.environ.get(f"ECH0_{f.name.upper()}")
            if env is not None:
                kind = type(f.default)
                value: object = env.strip().lower() in ("1", "true", "yes", "on") if kind is bool else kind(env)
                setattr(self, f.name, value)

    def services(self) -> Services:
        """The pool, router, compressor and knowledge base for these settings (cached per process)."""
        return get_services(self.experts_file, self.kb_dir)
