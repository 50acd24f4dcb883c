"""Load and validate `experts.yaml`.

Every problem is reported as one `ConfigError` line naming the file, the
expert and the field, e.g. ``experts.yaml: experts[2] (physics).domain: 'fysics'
is not one of mathematics, physics, ...``.
"""

from __future__ import annotations

import importlib.util
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ech0_moe.errors import ConfigError

DOMAINS: tuple[str, ...] = (
    "mathematics",
    "physics",
    "chemistry",
    "biology",
    "computer_science",
    "engineering",
    "reasoning",
    "general",
)
BACKENDS: tuple[str, ...] = ("llamacpp", "ollama")
DEFAULT_OLLAMA_HOST = "http://127.0.0.1:11434"

_UNITS = {
    "": 1,
    "B": 1,
    "KB": 10**3,
    "MB": 10**6,
    "GB": 10**9,
    "TB": 10**12,
    "KIB": 2**10,
    "MIB": 2**20,
    "GIB": 2**30,
    "TIB": 2**40,
}
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*$")


def parse_size(value: Any, where: str) -> int:
    """Parse ``20GB``, ``150 MiB`` or a plain integer into bytes."""
    if isinstance(value, bool):
        raise ConfigError(f"{where}: expected a size such as '20GB', got {value!r}")
    if isinstance(value, int | float):
        return int(value)
    if isinstance(value, str):
        m = _SIZE_RE.match(value)
        if m and m.group(2).upper() in _UNITS:
            return int(float(m.group(1)) * _UNITS[m.group(2).upper()])
    raise ConfigError(f"{where}: expected a size such as '20GB', got {value!r}")


def format_size(n: int | float) -> str:
    """Human-readable bytes, decimal units (``98.2MB``)."""
    for unit, div in (("GB", 10**9), ("MB", 10**6), ("KB", 10**3)):
        if abs(n) >= div:
            return f"{n / div:.1f}{unit}"
    return f"{int(n)}B"


def package_dir(package: str) -> Path | None:
    """Folder of an installed package, found without importing it (some need tools we lack)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def resolve_model_ref(ref: str, base_dir: Path) -> Path:
    """Resolve ``pkg:PACKAGE/FILE`` (a file shipped inside an installed package,
    located without importing it) or a path relative to ``experts.yaml``."""
    if ref.startswith("pkg:"):
        package, _, rel = ref[4:].partition("/")
        folder = package_dir(package)
        if folder is None:
            raise ConfigError(f"package {package!r} for model {ref!r} is not installed")
        return folder / rel
    path = Path(os.path.expanduser(ref))
    return path if path.is_absolute() else (base_dir / path)


@dataclass(frozen=True)
class ExpertSpec:
    """One expert: a model plus the system prompt and routing text that make it a specialist."""

    name: str
    domain: str
    backend: str
    model: str
    system_prompt: str
    description: str
    examples: tuple[str, ...] = ()
    keywords: tuple[str, ...] = ()
    size_bytes: int = 0
    host: str = ""
    n_ctx: int = 2048
    max_tokens: int = 128
    temperature: float = 0.0

    @property
    def model_key(self) -> str:
        """Experts with the same key share one loaded model (no swap between them)."""
        return f"{self.backend}|{self.host}|{self.model}"

    @property
    def device(self) -> str:
        """Where the model lives and whose memory budget it uses: this process, or an Ollama host."""
        return self.host if self.backend == "ollama" else "local"

    @property
    def routing_texts(self) -> list[str]:
        return [self.description, *self.examples]


@dataclass(frozen=True)
class RouterSettings:
    """`router:` in experts.yaml: the fitted model and the decision thresholds."""

    model: str = ""  # .npz from `ech0-moe router fit`; empty = the packaged model
    min_confidence: float = 0.3  # below this the general expert answers
    stay_margin: float = 0.2  # stay on a loaded expert within this of the best (bench: -10% swaps, same accuracy)
    # plus this much margin per second the avoided load is expected to take: the score (probability)
    # you would give up to save one second of loading; 0 = the margin alone decides
    stay_per_second: float = 0.0


@dataclass(frozen=True)
class PoolConfig:
    """The whole `experts.yaml`: a memory budget and the experts."""

    path: Path
    memory_budget: int
    experts: tuple[ExpertSpec, ...]
    general_expert: str
    router: RouterSettings = field(default_factory=RouterSettings)
    host_budgets: dict[str, int] = field(default_factory=dict)

    def budget_for(self, device: str) -> int:
        """The memory budget of a device: `memory_budget` locally, `hosts:` (or the same) per Ollama host."""
        return self.host_budgets.get(device, self.memory_budget)

    def expert(self, name: str) -> ExpertSpec:
        for e in self.experts:
            if e.name == name:
                return e
        raise ConfigError(f"unknown expert {name!r}; known: {', '.join(self.names)}")

    @property
    def names(self) -> list[str]:
        return [e.name for e in self.experts]


def _str(raw: dict[str, Any], key: str, where: str, *, required: bool = True) -> str:
    value = raw.get(key)
    if value is None or (isinstance(value, str) and not value.strip()):
        if required:
            raise ConfigError(f"{where}.{key}: missing (required)")
        return ""
    if not isinstance(value, str):
        raise ConfigError(f"{where}.{key}: expected text, got {type(value).__name__}")
    return value.strip()


def _str_list(raw: dict[str, Any], key: str, where: str) -> tuple[str, ...]:
    value = raw.get(key) or []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{where}.{key}: expected a list of strings")
    return tuple(v.strip() for v in value if v.strip())


def _number(raw: dict[str, Any], key: str, where: str, default: float, kind: type) -> Any:
    value = raw.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise ConfigError(f"{where}.{key}: expected a non-negative number, got {value!r}")
    return kind(value)


def _expert(raw: Any, i: int, defaults: dict[str, Any], base_dir: Path, fname: str) -> ExpertSpec:
    if not isinstance(raw, dict):
        raise ConfigError(f"{fname}: experts[{i}]: expected a mapping, got {type(raw).__name__}")
    merged = {**defaults, **raw}
    name = merged.get("name")
    where = f"{fname}: experts[{i}]" + (f" ({name})" if isinstance(name, str) else "")
    name = _str(merged, "name", where)
    domain = _str(merged, "domain", where)
    if domain not in DOMAINS:
        raise ConfigError(f"{where}.domain: {domain!r} is not one of {', '.join(DOMAINS)}")
    backend = _str(merged, "backend", where)
    if backend not in BACKENDS:
        raise ConfigError(f"{where}.backend: unknown backend {backend!r} (use {' or '.join(BACKENDS)})")
    model = _str(merged, "model", where)
    host = ""
    if backend == "llamacpp":
        path = resolve_model_ref(model, base_dir)
        if not path.is_file():
            raise ConfigError(f"{where}.model: model file not found: {path}")
        model = str(path.resolve())
        size = merged.get("size", "auto")
        size_bytes = path.stat().st_size if size in (None, "auto") else parse_size(size, f"{where}.size")
    else:
        if ":" not in model.rsplit("/", 1)[-1]:
            model += ":latest"  # Ollama's canonical name
        host = (_str(merged, "host", where, required=False) or DEFAULT_OLLAMA_HOST).rstrip("/")
        if not host.startswith(("http://", "https://")):
            raise ConfigError(f"{where}.host: expected a URL such as {DEFAULT_OLLAMA_HOST}, got {host!r}")
        size = merged.get("size")
        size_bytes = 0 if size in (None, "auto") else parse_size(size, f"{where}.size")
    return ExpertSpec(
        name=name,
        domain=domain,
        backend=backend,
        model=model,
        host=host,
        system_prompt=_str(merged, "system_prompt", where),
        description=_str(merged, "description", where),
        examples=_str_list(merged, "examples", where),
        keywords=tuple(k.lower() for k in _str_list(merged, "keywords", where)),
        size_bytes=size_bytes,
        n_ctx=_number(merged, "n_ctx", where, 2048, int),
        max_tokens=_number(merged, "max_tokens", where, 128, int),
        temperature=_number(merged, "temperature", where, 0.0, float),
    )


def load_config(path: str | os.PathLike[str]) -> PoolConfig:
    """Read and validate `experts.yaml`; raise `ConfigError` with one clear line on any problem."""
    p = Path(path)
    fname = str(path)
    if not p.is_file():
        raise ConfigError(f"{fname}: experts file not found")
    try:
        raw = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{fname}: invalid YAML{line}: {problem}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{fname}: not a UTF-8 text file") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{fname}: expected a mapping with 'memory_budget' and 'experts'")
    if "memory_budget" not in raw:
        raise ConfigError(f"{fname}: memory_budget: missing (required), e.g. '20GB'")
    budget = parse_size(raw["memory_budget"], f"{fname}: memory_budget")
    if budget <= 0:
        raise ConfigError(f"{fname}: memory_budget: must be greater than 0")
    defaults = raw.get("defaults") or {}
    if not isinstance(defaults, dict):
        raise ConfigError(f"{fname}: defaults: expected a mapping")
    items = raw.get("experts")
    if not isinstance(items, list) or not items:
        raise ConfigError(f"{fname}: experts: expected a non-empty list")
    base_dir = p.resolve().parent
    experts = tuple(_expert(e, i, defaults, base_dir, fname) for i, e in enumerate(items))
    host_budgets = _host_budgets(raw.get("hosts"), fname)
    seen: set[str] = set()
    for e in experts:
        if e.name in seen:
            raise ConfigError(f"{fname}: experts: duplicate expert name {e.name!r}")
        seen.add(e.name)
        limit = host_budgets.get(e.device, budget)
        if e.size_bytes > limit:
            which = "memory_budget" if e.device not in host_budgets else f"the budget of {e.device}"
            raise ConfigError(
                f"{fname}: expert {e.name!r} needs {format_size(e.size_bytes)}, more than {which} {format_size(limit)}"
            )
    general = raw.get("general_expert") or next((e.name for e in experts if e.domain == "general"), experts[0].name)
    if general not in seen:
        raise ConfigError(f"{fname}: general_expert: {general!r} is not an expert name")
    unknown = sorted(set(raw) - {"memory_budget", "defaults", "experts", "general_expert", "router", "hosts"})
    if unknown:
        raise ConfigError(f"{fname}: unknown setting {unknown[0]!r}")
    return PoolConfig(
        path=p.resolve(),
        memory_budget=budget,
        experts=experts,
        general_expert=general,
        router=_router_settings(raw.get("router"), base_dir, fname),
        host_budgets=host_budgets,
    )


def _host_budgets(raw: Any, fname: str) -> dict[str, int]:
    """`hosts: {http://gpu-box:11434: 24GB}`: each Ollama host's own memory budget."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{fname}: hosts: expected a mapping of Ollama host URL to memory budget")
    out: dict[str, int] = {}
    for host, value in raw.items():
        size = value.get("memory_budget") if isinstance(value, dict) else value
        budget = parse_size(size, f"{fname}: hosts.{host}")
        if budget <= 0:
            raise ConfigError(f"{fname}: hosts.{host}: memory budget must be greater than 0")
        out[str(host).rstrip("/")] = budget
    return out


def _router_settings(raw: Any, base_dir: Path, fname: str) -> RouterSettings:
    if raw is None:
        return RouterSettings()
    where = f"{fname}: router"
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping")
    known = ("model", "min_confidence", "stay_margin", "stay_per_second")
    unknown = sorted(set(raw) - set(known))
    if unknown:
        raise ConfigError(f"{where}.{unknown[0]}: unknown setting (use {', '.join(known)})")
    model = _str(raw, "model", where, required=False)
    if model:
        path = resolve_model_ref(model, base_dir)
        if not path.is_file():
            raise ConfigError(f"{where}.model: router model not found: {path}")
        model = str(path)
    settings = RouterSettings(
        model=model,
        min_confidence=_number(raw, "min_confidence", where, RouterSettings.min_confidence, float),
        stay_margin=_number(raw, "stay_margin", where, RouterSettings.stay_margin, float),
        stay_per_second=_number(raw, "stay_per_second", where, RouterSettings.stay_per_second, float),
    )
    if settings.min_confidence > 1 or settings.stay_margin > 1:
        raise ConfigError(f"{where}: min_confidence and stay_margin are probabilities between 0 and 1")
    return settings
