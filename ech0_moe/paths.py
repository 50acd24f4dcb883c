"""Where ECH0 MoE reads and writes: the user's folders, never the installed source tree.

- the pool: ``./experts.yaml`` of the current directory if there is one, else the
  example pool shipped with the package;
- state (knowledge base, benchmark output): ``$ECH0_HOME``, else ``./.ech0``;
- derived model files (ONNX exports of the embedder, the demo's second GGUF copy,
  fitted routers): ``$ECH0_HOME/models``, else ``$XDG_CACHE_HOME/ech0-moe`` (``~/.cache/ech0-moe``).
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from ech0_moe.errors import ConfigError

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


def package_dir(package: str) -> Path | None:
    """Folder of an installed package, found without importing anything (not even a dotted
    name's parents: `find_spec("a.b")` would import `a`); None when there is no such folder."""
    top, *rest = package.split(".")
    if not top.isidentifier() or not all(part.isidentifier() for part in rest):
        return None
    spec = importlib.util.find_spec(top)  # a top-level name is located, not imported
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations))).joinpath(*rest)
    return folder if folder.is_dir() else None


def resolve_model_ref(ref: str, base_dir: Path) -> Path:
    """Resolve ``pkg:PACKAGE/FILE`` (a file shipped inside an installed package, located
    without importing it), ``cache:FILE`` (ECH0's model cache, see `paths.cache_dir`) or a
    path relative to ``experts.yaml``. ``pkg:`` and ``cache:`` paths cannot leave their folder."""
    for scheme in ("pkg:", "cache:"):
        if not ref.startswith(scheme):
            continue
        if scheme == "pkg:":
            package, _, rel = ref[4:].partition("/")
            found = package_dir(package)
            if found is None:
                raise ConfigError(f"package {package!r} for model {ref!r} is not installed")
            folder = found
        else:
            folder, rel = cache_dir(), ref[6:]
        path = Path(os.path.normpath(folder.absolute() / rel))  # lexical: a symlink placed inside may point out
        if not path.is_relative_to(folder.absolute()):
            raise ConfigError(f"model {ref!r} points outside {folder}")
        return path
    path = Path(os.path.expanduser(ref))
    return path if path.is_absolute() else (base_dir / path)


def env_threads() -> int:
    """`ECH0_THREADS`: CPU threads for llama.cpp and the encoder (0 or unset: chosen per use)."""
    raw = os.environ.get("ECH0_THREADS", "").strip() or "0"
    if not raw.isdigit() or int(raw) > 1024:
        raise ConfigError(f"ECH0_THREADS={raw!r}: expected a whole number of threads from 0 to 1024")
    return int(raw)
