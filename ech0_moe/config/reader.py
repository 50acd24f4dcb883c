"""Read and check `experts.yaml` into a `PoolConfig`.

Every problem is one line naming the file, the expert and the field, e.g.
``experts.yaml: experts[2] (physics).backend: unknown backend 'vllm' (use llamacpp, ollama or ray)``.
`check_config` collects every problem of a file (for `ech0-moe validate`);
`load_config` raises `ConfigError` with the first.
"""

from __future__ import annotations

import os
import re
from dataclasses import fields
from pathlib import Path
from typing import Any

import yaml

from ech0_moe.config.checks import Checks
from ech0_moe.config.schema import (
    BACKENDS,
    DEFAULT_OLLAMA_HOST,
    PLACEMENTS,
    RAY_BOUNDS,
    RAY_RUNTIMES,
    RUNTIMES,
    ExpertSpec,
    PoolConfig,
    RaySettings,
    RouterSettings,
    format_size,
    ollama_model_name,
)
from ech0_moe.config.source import bounded_yaml, is_url
from ech0_moe.errors import ConfigError, shown
from ech0_moe.gguf import loaded_bytes
from ech0_moe.paths import experts_file, resolve_model_ref

# ---- reading experts.yaml ------------------------------------------------------------------
TOP_KEYS = ("memory_budget", "defaults", "experts", "general_expert", "router", "hosts", "ray")
EXPERT_KEYS = (
    *("name", "domain", "runtime", "placement", "model", "host", "api_key_env", "size", "system_prompt"),
    *("description", "examples", "keywords", "n_ctx", "max_tokens", "temperature", "repeat_penalty", "timeout"),
    "backend",  # older files: the runtime (llamacpp, ollama) or the placement (ray)
)
RAY_KEYS = tuple(f.name for f in fields(RaySettings))
ROUTER_KEYS = ("model", "data", "min_confidence", "stay_margin", "stay_per_second")
DEFAULTS = {"n_ctx": 2048, "max_tokens": 128, "temperature": 0.0, "repeat_penalty": 1.1, "timeout": 120.0}  # README
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")
LIMITS = {
    **{"n_ctx": (64, 1 << 20), "max_tokens": (1, 1 << 16), "temperature": (0.0, 5.0), "repeat_penalty": (1.0, 2.0)},
    "timeout": (0.1, 86_400),
}


USE_RUNTIMES = f"{', '.join(list(RUNTIMES)[:-1])} or {list(RUNTIMES)[-1]}"


class _Reader(Checks):
    """Reads one file into a `PoolConfig`, collecting every problem (`Checks`)."""

    def expert(self, raw: Any, i: int, defaults: dict[str, Any], base_dir: Path) -> ExpertSpec | None:
        if not isinstance(raw, dict):
            self.add(f"{self.fname}: experts[{i}]: expected a mapping, got {type(raw).__name__}")
            return None
        merged = {**defaults, **raw}
        label = merged.get("name")
        label_text = label if isinstance(label, str) and _NAME.match(label) else shown(label)  # one line, always
        where = f"{self.fname}: experts[{i}]" + (f" ({label_text})" if isinstance(label, str) else "")
        self.keys(raw, where, EXPERT_KEYS)
        name = self.text(merged, "name", where)
        if name and not _NAME.match(name):
            self.add(f"{where}.name: expected letters, digits, '_', '-' or '.' (at most 64), got {shown(name)}")
            name = ""
        domain = self.text(merged, "domain", where)  # a free label: reporting, grouping, labelled data
        runtime, placement = self.runtime_and_placement(merged, raw, where)
        entry = RUNTIMES.get(runtime)
        model = self.text(merged, "model", where)
        host, size_bytes = "", 0
        size = merged.get("size", "auto")
        numbers = {k: self.number(merged, k, where, DEFAULTS[k], LIMITS[k]) for k in DEFAULTS}
        if entry is None or not model:
            pass
        elif entry.kind == "file" and placement == "local" and self.check_files:
            try:
                path = resolve_model_ref(model, base_dir)
            except ConfigError as exc:
                self.add(f"{where}.model: {exc}")
                path = None
            if path is not None and not path.is_file():
                self.add(f"{where}.model: model file not found: {path}")
            elif path is not None:
                model = str(path.resolve())
                # the larger of `size:` and the header's estimate counts: a size below what the
                # model really takes (`size: 1`) would let two models that do not fit both load
                size_bytes = self._footprint(model, int(numbers["n_ctx"]))
                if size not in (None, "auto"):
                    size_bytes = max(size_bytes, self.size(size, f"{where}.size"))
        else:  # a server's model, a file resolved on Ray's replicas, or the schema alone (no file opened)
            if entry.kind == "server":
                model = ollama_model_name(model) if runtime == "ollama" else model
                host = (self.text(merged, "host", where, required=False) or entry.default_host).rstrip("/")
                if not is_url(host):
                    self.add(f"{where}.host: expected a URL such as {entry.default_host}, got {shown(host)}")
            size_bytes = 0 if size in (None, "auto") else self.size(size, f"{where}.size")
        key_env = self.text(merged, "api_key_env", where, required=False)
        if key_env and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,127}", key_env):
            self.add(f"{where}.api_key_env: expected the name of an environment variable, got {shown(key_env)}")
        spec = ExpertSpec(
            name=name,
            domain=domain,
            runtime=runtime,
            model=model,
            host=host,
            system_prompt=self.text(merged, "system_prompt", where),
            description=self.text(merged, "description", where, required=False),
            examples=self.texts(merged, "examples", where),
            keywords=tuple(k.lower() for k in self.texts(merged, "keywords", where)),
            size_bytes=size_bytes,
            n_ctx=int(numbers["n_ctx"]),
            max_tokens=int(numbers["max_tokens"]),
            temperature=float(numbers["temperature"]),
            timeout=float(numbers["timeout"]),
            repeat_penalty=float(numbers["repeat_penalty"]),
            placement=placement,
            api_key_env=key_env,
        )
        if not spec.routing_texts:
            self.add(f"{where}: needs a description or examples (the router learns the expert from them)")
        return spec if name else None

    def runtime_and_placement(self, merged: dict[str, Any], raw: dict[str, Any], where: str) -> tuple[str, str]:
        """What runs the expert (`runtime:`) and where the pool places it (`placement:`); the older
        `backend:` still reads: llamacpp or ollama is the runtime, ray the placement. An expert's
        own `runtime:` wins over a `backend:` of the defaults."""
        if "runtime" in raw and "backend" not in raw:
            merged = {k: v for k, v in merged.items() if k != "backend"}
        backend = self.text(merged, "backend", where, required=False)
        runtime = self.text(merged, "runtime", where, required=False)
        placement = self.text(merged, "placement", where, required=False)
        if backend and backend not in BACKENDS:
            self.add(f"{where}.backend: unknown backend {shown(backend)} (use runtime: {USE_RUNTIMES}; placement: ray)")
        elif backend == "ray":
            placement = placement or "ray"
        elif backend and runtime and runtime != backend:
            self.add(f"{where}: backend {shown(backend)} and runtime {shown(runtime)} disagree (give runtime alone)")
        elif backend:
            runtime = runtime or backend
        placement = placement or "local"
        runtime = runtime or ("llamacpp" if placement == "ray" else "")
        if placement not in PLACEMENTS:
            self.add(f"{where}.placement: unknown placement {shown(placement)} (use {' or '.join(PLACEMENTS)})")
        if not runtime:
            self.add(f"{where}.runtime: missing (required): {USE_RUNTIMES}")
        elif runtime not in RUNTIMES:
            self.add(f"{where}.runtime: unknown runtime {shown(runtime)} (use {USE_RUNTIMES})")
        elif placement == "ray" and runtime not in RAY_RUNTIMES:
            self.add(f"{where}.runtime: placement ray runs {' or '.join(RAY_RUNTIMES)}, not {shown(runtime)}")
        return runtime, placement

    def checked_defaults(self, defaults: dict[str, Any]) -> dict[str, Any]:
        """`defaults:` checked once: a bad value is one problem naming `defaults`, and is dropped
        so that the experts inheriting it do not repeat it."""
        where = f"{self.fname}: defaults"
        kept = dict(defaults)
        before = len(self.problems)
        for key in DEFAULTS:
            if key in kept:
                self.number(kept, key, where, DEFAULTS[key], LIMITS[key])
                if len(self.problems) > before:
                    del kept[key]
                    before = len(self.problems)
        for key, known in (("backend", BACKENDS), ("runtime", tuple(RUNTIMES)), ("placement", PLACEMENTS)):
            if kept.get(key) is not None and kept[key] not in known:
                self.add(f"{where}.{key}: unknown {key} {shown(kept[key])} (use {', '.join(known)})")
                del kept[key]
        if "size" in kept and kept["size"] not in (None, "auto") and not self.size(kept["size"], f"{where}.size"):
            del kept["size"]
        for key in ("system_prompt", "description", "host", "api_key_env"):
            if key in kept and not isinstance(kept[key], str):
                self.add(f"{where}.{key}: expected text, got {type(kept[key]).__name__}")
                del kept[key]
        return kept

    def hosts(self, raw: Any) -> dict[str, int]:
        """`hosts: {http://gpu-box:11434: 24GB}`: each Ollama host's own memory budget."""
        if raw is None:
            return {}
        if not isinstance(raw, dict):
            self.add(f"{self.fname}: hosts: expected a mapping of Ollama host URL to memory budget")
            return {}
        out: dict[str, int] = {}
        for host, value in raw.items():
            if not isinstance(host, str) or not is_url(host):
                where = f"{self.fname}: hosts"
                self.add(f"{where}: expected an Ollama URL such as {DEFAULT_OLLAMA_HOST}, got {shown(host)}")
                continue
            size = value.get("memory_budget") if isinstance(value, dict) else value
            budget = self.size(size, f"{self.fname}: hosts.{host}")
            if budget:
                out[str(host).rstrip("/")] = budget
        return out

    def ray(self, raw: Any) -> RaySettings | None:
        """`ray: {address: auto, app: ech0-moe, replicas: 2, replica_budget: 20GB, ...}`."""
        if raw is None:
            return None
        where = f"{self.fname}: ray"
        if not isinstance(raw, dict):
            self.add(f"{where}: expected a mapping (address, app, replicas, replica_budget, ...)")
            return None
        self.keys(raw, where, RAY_KEYS)
        base = RaySettings()
        budget = raw.get("replica_budget")
        return RaySettings(
            address=self.text(raw, "address", where, required=False) or base.address,
            app=self.text(raw, "app", where, required=False) or base.app,
            replica_budget=0 if budget is None else self.size(budget, f"{where}.replica_budget"),
            **{
                k: type(getattr(base, k))(self.number(raw, k, where, getattr(base, k), b))
                for k, b in RAY_BOUNDS.items()
            },
        )

    def router(self, raw: Any, base_dir: Path) -> RouterSettings:
        if raw is None:
            return RouterSettings()
        where = f"{self.fname}: router"
        if not isinstance(raw, dict):
            self.add(f"{where}: expected a mapping")
            return RouterSettings()
        self.keys(raw, where, ROUTER_KEYS)
        files = {}
        for key, what in (("model", "router model"), ("data", "labelled data")):
            ref = self.text(raw, key, where, required=False)
            if ref:
                path = resolve_model_ref(ref, base_dir)
                if not path.is_file():
                    self.add(f"{where}.{key}: {what} not found: {path}")
                ref = str(path)
            files[key] = ref
        return RouterSettings(
            model=files["model"],
            data=files["data"],
            min_confidence=(
                self.number(raw, "min_confidence", where, 0.0, (0, 1)) if "min_confidence" in raw else None
            ),
            stay_margin=self.number(raw, "stay_margin", where, RouterSettings.stay_margin, (0, 1)),
            stay_per_second=self.number(raw, "stay_per_second", where, RouterSettings.stay_per_second, (0, 1e6)),
        )

    @staticmethod
    def _footprint(model: str, n_ctx: int) -> int:
        """A GGUF's loaded footprint (weights, KV cache at its n_ctx, compute buffer); 0 (not
        known) for a damaged file, whose load then says what is wrong."""
        try:
            return loaded_bytes(model, n_ctx)
        except ValueError:
            return 0

    def read(self, p: Path) -> PoolConfig | None:
        fname = self.fname
        if not p.is_file():
            self.add(f"{fname}: experts file not found")
            return None
        try:
            raw = bounded_yaml(p)
        except ConfigError as exc:
            self.add(f"{fname}: {exc}")
            return None
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            line = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
            self.add(f"{fname}: invalid YAML{line}: {problem}")
            return None
        except UnicodeDecodeError:
            self.add(f"{fname}: not a UTF-8 text file")
            return None
        if not isinstance(raw, dict):
            self.add(f"{fname}: expected a mapping with 'memory_budget' and 'experts'")
            return None
        self.keys(raw, fname, TOP_KEYS)
        budget = 0
        if "memory_budget" not in raw:
            self.add(f"{fname}: memory_budget: missing (required), e.g. '20GB'")
        else:
            budget = self.size(raw["memory_budget"], f"{fname}: memory_budget")
        defaults = raw.get("defaults") or {}
        if not isinstance(defaults, dict):
            self.add(f"{fname}: defaults: expected a mapping")
            defaults = {}
        self.keys(defaults, f"{fname}: defaults", tuple(k for k in EXPERT_KEYS if k != "name"))
        defaults = self.checked_defaults(defaults)
        items = raw.get("experts")
        if not isinstance(items, list) or not items:
            self.add(f"{fname}: experts: expected a non-empty list")
            items = []
        base_dir = p.resolve().parent
        experts = [e for i, item in enumerate(items) if (e := self.expert(item, i, defaults, base_dir))]
        host_budgets = self.hosts(raw.get("hosts"))
        ray = self.ray(raw.get("ray"))
        on_ray = {e.placement == "ray" for e in experts}
        if on_ray == {True, False}:
            self.add(f"{fname}: experts: placement ray serves the whole pool; it cannot be mixed with other placements")
        elif on_ray == {True} and ray is None:
            ray = RaySettings()
        if ray is not None and ray.replica_budget:
            host_budgets["ray"] = ray.replica_budget
        seen: set[str] = set()
        for e in experts:
            if e.name in seen:
                self.add(f"{fname}: experts: duplicate expert name {shown(e.name)}")
            seen.add(e.name)
            limit = host_budgets.get(e.device, budget)
            if budget and e.size_bytes > limit:
                which = (
                    "memory_budget"
                    if e.device not in host_budgets
                    else "ray.replica_budget"
                    if e.device == "ray"
                    else f"the budget of {e.device}"
                )
                self.add(
                    f"{fname}: expert {shown(e.name)} needs {format_size(e.size_bytes)}, more than {which} "
                    f"{format_size(limit)}"
                )
        if "general_expert" in raw and not isinstance(raw["general_expert"], str):
            self.add(f"{fname}: general_expert: expected an expert's name, got {shown(raw['general_expert'])}")
            return None
        general = raw.get("general_expert") or next(
            (e.name for e in experts if e.domain == "general"), experts[0].name if experts else ""
        )
        if experts and general not in seen:
            self.add(f"{fname}: general_expert: {shown(general)} is not an expert name")
        router = self.router(raw.get("router"), base_dir)
        if self.problems:
            return None
        return PoolConfig(
            path=p.resolve(),
            memory_budget=budget,
            experts=tuple(experts),
            general_expert=general,
            router=router,
            host_budgets=host_budgets,
            ray=ray,
        )


def check_config(path: str | os.PathLike[str], *, check_files: bool = True) -> tuple[PoolConfig | None, list[str]]:
    """Read `experts.yaml` and return (the config or None, every problem found, one line each);
    `check_files=False` reads the schema alone (no model file is looked for: tests, routing)."""
    reader = _Reader(str(path))
    reader.check_files = check_files
    config = reader.read(Path(path))
    return config, reader.problems


def load_config(path: str | os.PathLike[str], *, check_files: bool = True) -> PoolConfig:
    """Read and validate `experts.yaml`; raise `ConfigError` with one clear line on the first problem."""
    config, problems = check_config(path, check_files=check_files)
    if config is None:
        more = f" (and {len(problems) - 1} more: run `ech0-moe validate`)" if len(problems) > 1 else ""
        raise ConfigError(problems[0] + more)
    return config


def load_pool(path: str | os.PathLike[str] = "") -> PoolConfig:
    """`load_config` of `path`, or when empty of the default pool (`paths.experts_file`)."""
    return load_config(experts_file(path))
