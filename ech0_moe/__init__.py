"""ECH0 MoE: many large experts, one loaded at a time, routed per query."""

__version__ = "0.1.0"


def __getattr__(name: str) -> object:
    """`ech0_moe.benchmark(questions, modes=...)`: loaded on first use (it brings LangGraph)."""
    if name == "benchmark":
        from ech0_moe.bench.modes import benchmark

        return benchmark
    raise AttributeError(f"module 'ech0_moe' has no attribute {name!r}")
