"""The heavy machinery for one `experts.yaml` + knowledge-base folder, built once per process."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from ech0_moe.compressor import Compressed, ExtractiveCompressor, LLMCompressor, LLMLinguaCompressor
from ech0_moe.config import PoolConfig, load_config
from ech0_moe.ensemble import TurnRegistry
from ech0_moe.errors import Ech0Error
from ech0_moe.kb import KnowledgeBase
from ech0_moe.pool import ExpertPool
from ech0_moe.router import Router


@dataclass
class Services:
    """Pool, router, compressor and (lazily) the knowledge base, shared by all nodes."""

    config: PoolConfig
    kb_dir: Path
    pool: ExpertPool
    compressor: ExtractiveCompressor = field(default_factory=ExtractiveCompressor)
    turns: TurnRegistry = field(default_factory=TurnRegistry)

    @cached_property
    def router(self) -> Router:
        return Router(self.config)

    @cached_property
    def kb(self) -> KnowledgeBase:
        return KnowledgeBase(self.kb_dir)

    @cached_property
    def llm_compressor(self) -> LLMCompressor:
        general = self.config.general_expert
        return LLMCompressor(lambda messages, n: self.pool.chat(general, messages, n)[0], self.compressor)

    @cached_property
    def llmlingua_compressor(self) -> LLMLinguaCompressor:
        return LLMLinguaCompressor()

    def compress(self, method: str, query: str, contexts: list[str], ratio: float) -> Compressed:
        """Compress with `method`: extractive (default), llm (general expert, fact-checked) or llmlingua."""
        if method == "extractive":
            return self.compressor.compress(query, contexts, ratio)
        if method == "llm":
            return self.llm_compressor.compress(query, contexts, ratio)
        if method == "llmlingua":
            return self.llmlingua_compressor.compress(query, contexts, ratio)
        raise Ech0Error(f"unknown compression_method {method!r}; use extractive, llm or llmlingua")


_cache: dict[tuple[str, str], Services] = {}
_cache_lock = threading.Lock()


def get_services(experts_file: str | Path, kb_dir: str | Path) -> Services:
    """Build (or reuse) the services for this configuration; raises `ConfigError` if it is invalid."""
    key = (str(Path(experts_file).resolve()), str(Path(kb_dir).resolve()))
    with _cache_lock:
        if key not in _cache:
            config = load_config(experts_file)
            services = Services(config=config, kb_dir=Path(key[1]), pool=ExpertPool(config))
            # Warm the lazy parts under the lock so parallel branches never build them twice.
            _ = services.router
            _cache[key] = services
        return _cache[key]
