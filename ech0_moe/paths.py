"""Where ECH0 MoE reads and writes: the user's folders, never the installed source tree.

- the pool: ``./experts.yaml`` of the current directory if there is one, else the
  example pool shipped with the package;
- state (knowledge base, benchmark output): ``$ECH0_HOME``, else ``./.ech0``;
- derived model files (ONNX exports of the embedder, the demo's second GGUF copy,
  fitted routers): ``$ECH0_HOME/models``, else ``$XDG_CACHE_HOME/ech0-moe`` (``~/.cache/ech0-moe``).
"""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
PACKAGED_POOL = PACKAGE_DIR / "data" / "experts.yaml"


def home() -> Path:
    """ECH0's state folder: ``$ECH0_HOME`` or ``./.ech0``."""
    return Path(os.environ.get("ECH0_HOME") or Path.cwd() / ".ech0")


def experts_file(path: str | os.PathLike[str] = "") -> Path:
    """`path`, or when empty ``./experts.yaml`` if the current directory has one, else the packaged pool."""
    if str(path):
        return Path(path)
    local = Path.cwd() / "experts.yaml"
    return local if local.is_file() else PACKAGED_POOL


def kb_dir(path: str | os.PathLike[str] = "") -> Path:
    """`path`, or when empty ``$ECH0_HOME/kb`` (``./.ech0/kb``)."""
    return Path(path) if str(path) else home() / "kb"


def cache_dir() -> Path:
    """Derived model files, shared by every project of this user."""
    if os.environ.get("ECH0_HOME"):
        return Path(os.environ["ECH0_HOME"]) / "models"
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "ech0-moe"
