"""ECH0 MoE: many large experts, one loaded at a time, routed per query."""

__version__ = "0.1.0"
