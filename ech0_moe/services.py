"""The machinery a graph run uses, passed in explicitly (`build_graph(services=...)`).

- `Services`: one pool's expert pool, router, compressors and ensemble turns, plus a
  knowledge base. Build one yourself (`Services.create`) to run the graph with your
  own runtimes or store: every run then uses it, whatever its `Context` says.
- `ServiceRegistry`: builds them on demand from each run's `Context`: one pool (and
  router) per experts file - the memory budget belongs to the machine, so two
  knowledge-base folders never mean two pools - and one knowledge base per folder.
  `build_graph()` without `services` uses the process's registry (`process_registry()`),
  so every graph in a process shares one pool per experts file.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ech0_moe.compressor import (
    COMPRESSION_METHODS,
    Compressor,
    ExtractiveCompressor,
    LLMCompressor,
    LLMLinguaCompressor,
)
from ech0_moe.config import PoolConfig, load_config
from ech0_moe.errors import Ech0Error
from ech0_moe.owners import LOCAL
from ech0_moe.paths import experts_file as resolve_experts_file
from ech0_moe.paths import kb_dir as resolve_kb_dir
from ech0_moe.routing import taught
from ech0_moe.routing.router import Router
from ech0_moe.routing.rows import taught_rows
from ech0_moe.serving import ManagedPool, make_pool
from ech0_moe.turns import TurnRegistry
from ech0_moe.vote import Agreement

if TYPE_CHECKING:
    from ech0_moe.memory.kb import KnowledgeBase
    from ech0_moe.serving.runtimes import Runtime


class Services:
    """Pool, router, compressors, ensemble turns and a (lazily opened) knowledge base."""

    def __init__(
        self,
        config: PoolConfig,
        pool: ManagedPool,
        router: Router,
        kb: KnowledgeBase | Callable[[], KnowledgeBase],
        *,
        turns: TurnRegistry | None = None,
        compressors: dict[str, Compressor] | None = None,
        agreement: Agreement | None = None,
    ) -> None:
        self.config = config
        self.pool = pool
        self.router = router
        self.turns = turns or TurnRegistry()
        self.agreement = agreement or Agreement(_embed)  # do two ensemble answers mean the same?
        self._compressors = compressors if compressors is not None else {"extractive": ExtractiveCompressor()}
        self._kb = kb
        self._lock = threading.Lock()

    @classmethod
    def create(
        cls,
        config: PoolConfig,
        kb: KnowledgeBase | Callable[[], KnowledgeBase],
        *,
        runtimes: dict[str, Runtime] | None = None,
        router: Router | None = None,
    ) -> Services:
        """Services for `config`: a new pool (with these runtimes, e.g. a fake; `placement: ray`: the
        Ray Serve application's), the router (keyword routing if given none and the embedder is
        missing) and `kb`."""
        return cls(config, make_pool(config, runtimes), router or Router(config), kb)

    @property
    def kb(self) -> KnowledgeBase:
        """The knowledge base, opened on first use (basic and fast runs never open it)."""
        with self._lock:
            if callable(self._kb):
                self._kb = self._kb()
            return self._kb

    def compressor(self, method: str) -> Compressor:
        """The compressor for `method`: extractive (default), llm (the general expert, fact-checked)
        or llmlingua (when installed)."""
        with self._lock:
            if method not in self._compressors:
                if method == "llm":
                    general = self.config.general_expert
                    self._compressors[method] = LLMCompressor(
                        lambda messages, n: self.pool.chat(general, messages, n)[0].text
                    )
                elif method == "llmlingua":
                    self._compressors[method] = LLMLinguaCompressor()
                else:
                    raise Ech0Error(f"unknown compression_method {method!r}; use {', '.join(COMPRESSION_METHODS)}")
            return self._compressors[method]

    def with_kb(self, kb: KnowledgeBase | Callable[[], KnowledgeBase], router: Router | None = None) -> Services:
        """The same pool, turns and compressors (and router, unless another) with another knowledge base."""
        return Services(
            self.config,
            self.pool,
            router or self.router,
            kb,
            turns=self.turns,
            compressors=self._compressors,
            agreement=self.agreement,
        )

    def for_run(self, experts_file: str | Path, kb_dir: str | Path, asker: str = LOCAL) -> Services:
        """Injected services serve every run as they are."""
        return self


class ServiceRegistry:
    """Services per run `Context`: one pool and router per experts file, one knowledge base per folder."""

    def __init__(self, runtimes: dict[str, Runtime] | None = None) -> None:
        self.runtimes = runtimes
        self._pools: dict[Path, Services] = {}
        self._kbs: dict[Path, KnowledgeBase] = {}
        self._runs: OrderedDict[tuple[Any, ...], Services] = OrderedDict()  # the latest MAX_RUNS
        self._routers: dict[tuple[Path, int], Router] = {}  # by experts file and taught rows
        self._lock = threading.Lock()

    def services(self, experts_file: str | Path) -> Services:
        """The pool, router and compressors of one experts file (its knowledge base is the run's);
        an empty path is the default pool (`paths.experts_file`). Raises `ConfigError` when invalid."""
        key = resolve_experts_file(experts_file).resolve()
        with self._lock:
            if key not in self._pools:
                self._pools[key] = Services.create(load_config(key), kb=no_kb, runtimes=self.runtimes)
            return self._pools[key]

    def kb(self, kb_dir: str | Path) -> KnowledgeBase:
        from ech0_moe.memory.kb import KnowledgeBase

        key = resolve_kb_dir(kb_dir).resolve()
        with self._lock:
            if key not in self._kbs:
                self._kbs[key] = KnowledgeBase(key)
            return self._kbs[key]

    def for_run(self, experts_file: str | Path, kb_dir: str | Path, asker: str = LOCAL) -> Services:
        """The services of a run's files as `asker` uses them, built once per (experts file,
        knowledge-base folder, asker, state of the taught routing rows): every node of a run gets
        the same object, and feedback changes the asker's routing from its next run on."""
        files = (resolve_experts_file(experts_file).resolve(), resolve_kb_dir(kb_dir).resolve())
        key = (*files, asker, _signature(files[1] / taught.FILE))
        with self._lock:
            found = self._runs.get(key)
            if found is not None:
                self._runs.move_to_end(key)
                return found
        shared = self.services(files[0])
        found = shared.with_kb(lambda: self.kb(files[1]), router=self._router(shared.config, files, asker))
        with self._lock:
            found = self._runs.setdefault(key, found)
            while len(self._runs) > MAX_RUNS:
                self._runs.popitem(last=False)
        return found

    def _router(self, config: PoolConfig, files: tuple[Path, Path], asker: str) -> Router | None:
        """The router `asker` routes with (None: the pool's own); one per distinct set of taught rows."""
        rows = taught_rows(config, taught.read(files[1]), asker)
        if not rows:
            return None
        key = (files[0], hash(tuple(rows)))
        with self._lock:
            found = self._routers.get(key)
        if found is None:
            found = Router(config, taught=rows)
            with self._lock:
                found = self._routers.setdefault(key, found)
        return found


MAX_RUNS = 256  # (files, asker) services a registry keeps; an older one is made again when asked


def _signature(path: Path) -> tuple[int, int] | None:
    """When and how big `path` last was (None: absent): a changed file means new rows."""
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size


def _embed(texts: list[str]) -> Any:
    """The knowledge base's MiniLM, loaded on first use (the vote's meaning check)."""
    from ech0_moe.embeddings import embed

    return embed(texts)


def no_kb() -> KnowledgeBase:
    """The knowledge base of services whose runs bring their own (`with_kb`, `for_run`)."""
    raise Ech0Error("no knowledge base: use ServiceRegistry.for_run")


ServiceProvider = Services | ServiceRegistry

_PROCESS_REGISTRY = ServiceRegistry()


def process_registry() -> ServiceRegistry:
    """The registry `build_graph()` uses by default: one pool per experts file in this process."""
    return _PROCESS_REGISTRY
