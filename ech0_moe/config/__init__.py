"""`experts.yaml`: its typed records (`schema`) and the reader that checks a file into them (`reader`)."""

from ech0_moe.config.reader import check_config, load_config, load_pool
from ech0_moe.config.schema import (
    BACKENDS,
    DEFAULT_FAIRNESS_S,
    DEFAULT_OLLAMA_HOST,
    PLACEMENTS,
    RUNTIMES,
    ExpertSpec,
    PoolConfig,
    RaySettings,
    RouterSettings,
    format_size,
    ollama_model_name,
    parse_size,
)

__all__ = [
    "BACKENDS",
    "DEFAULT_FAIRNESS_S",
    "DEFAULT_OLLAMA_HOST",
    "PLACEMENTS",
    "RUNTIMES",
    "ExpertSpec",
    "PoolConfig",
    "RaySettings",
    "RouterSettings",
    "check_config",
    "format_size",
    "load_config",
    "load_pool",
    "ollama_model_name",
    "parse_size",
]
