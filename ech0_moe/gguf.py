"""GGUF files without loading them: the header's metadata and the memory a loaded model takes."""

from __future__ import annotations

import functools
import mmap
import os
import struct
from typing import Any

GGUF_MAGIC = b"GGUF"
N_BATCH = 512  # tokens per llama_decode call
N_UBATCH = 128  # tokens per compute pass: its buffer is a quarter of 512's, and prompts ran faster here


_LENGTH = struct.Struct("<Q")
_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}


def read_gguf_metadata(path: str) -> dict[str, Any]:
    """A GGUF file's key/value header without loading it: scalars and strings as they are, an
    array as its length (so `tokenizer.ggml.tokens` gives the vocabulary size). Raises ValueError
    for a file that is not GGUF, or is cut short in its header or before its last tensor. Read once
    per file version: 11 ms for SmolLM2 (its 100k tokenizer strings are skipped by length)."""
    stat = os.stat(path)
    return _read_gguf_metadata(path, stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=256)
def _read_gguf_metadata(path: str, size: int, mtime_ns: int) -> dict[str, Any]:
    with open(path, "rb") as fh:
        if size < 24 or fh.read(4) != GGUF_MAGIC:
            raise ValueError("not a GGUF file")
        with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as buf:
            return _Header(buf, size).read()


class _Header:
    """A cursor over the mapped file; every read is bounds-checked (a cut header is a ValueError)."""

    def __init__(self, buf: mmap.mmap, size: int) -> None:
        self.buf, self.size, self.at = buf, size, 4

    def take(self, fmt: str) -> Any:
        width = struct.calcsize("<" + fmt)
        if self.at + width > self.size:
            raise ValueError("the header is cut short")
        (got,) = struct.unpack_from("<" + fmt, self.buf, self.at)
        self.at += width
        return got

    def skip(self, width: int) -> None:
        if self.at + width > self.size:
            raise ValueError("the header is cut short")
        self.at += width

    def string(self) -> str:
        length = self.take("Q")
        start = self.at
        self.skip(length)
        return self.buf[start : self.at].decode("utf-8", errors="replace")

    def value(self, kind: int) -> Any:
        if kind in _SCALARS:
            return self.take(_SCALARS[kind])
        if kind == 8:
            return self.string()
        if kind != 9:
            raise ValueError(f"unknown value type {kind}")
        item, count = self.take("I"), self.take("Q")
        if item in _SCALARS:
            self.skip(count * struct.calcsize(_SCALARS[item]))
        elif item == 8:  # a vocabulary: 100k strings, skipped by their lengths alone (a tight loop)
            at, length = self.at, _LENGTH.unpack_from
            try:
                for _ in range(count):
                    at += 8 + length(self.buf, at)[0]
            except struct.error:
                raise ValueError("the header is cut short") from None
            self.skip(at - self.at)
        else:
            for _ in range(count):
                self.value(item)
        return count

    def read(self) -> dict[str, Any]:
        self.take("I")  # version
        tensors = self.take("Q")
        metadata = {self.string(): self.value(self.take("I")) for _ in range(self.take("Q"))}
        last = 0  # where the last tensor's data starts: a file cut short ends before it
        for _ in range(tensors):
            self.skip(self.take("Q"))  # name
            self.skip(self.take("I") * 8 + 4)  # dimensions, type
            last = max(last, self.take("Q"))
        align = int(metadata.get("general.alignment", 32)) or 32
        if tensors and -(-self.at // align) * align + last >= self.size:
            raise ValueError("the file is cut short: its tensor data ends early")
        return metadata


def footprint_bytes(file_bytes: int, metadata: dict[str, Any], n_ctx: int, n_ubatch: int = N_UBATCH) -> int:
    """Memory a loaded GGUF takes: the file (mmapped weights), llama.cpp's f16 KV cache (n_ctx x
    layers x K and V x the KV heads' width x 2 bytes, allocated at load) and its compute buffer
    (about n_ubatch x (vocabulary + feed-forward + embedding width) floats, filled while answering).
    SmolLM2-135M at n_ctx 2048 and n_ubatch 128: 98.4 + 47.2 + 26.2 = 171.8 MB; llama.cpp's own
    log reports a 45.0 MiB KV and a 24.8 MiB compute buffer."""
    arch = metadata.get("general.architecture", "llama")

    def number(key: str, default: int) -> int:
        try:
            return int(metadata.get(f"{arch}.{key}", default))
        except ValueError:
            return default

    heads = number("attention.head_count", 1) or 1
    width = number("embedding_length", 0)
    kv = n_ctx * number("block_count", 0) * 2 * (width // heads * number("attention.head_count_kv", heads)) * 2
    vocab = number("vocab_size", 0) or int(metadata.get("tokenizer.ggml.tokens", 0))
    compute = n_ubatch * 4 * (vocab + number("feed_forward_length", 0) + width)
    return file_bytes + kv + compute


def loaded_bytes(path: str, n_ctx: int) -> int:
    """`footprint_bytes` of the GGUF at `path`; ValueError when its header cannot be read."""
    return footprint_bytes(os.path.getsize(path), read_gguf_metadata(path), n_ctx)
