"""experts.yaml validation: every mistake is one clear error naming the field (no model needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ech0_moe.config import load_config, parse_size
from ech0_moe.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]


def test_default_pool_is_valid_and_has_two_distinct_files() -> None:
    config = load_config(ROOT / "experts.yaml")
    assert len({e.domain for e in config.experts}) == 8
    assert len({e.model for e in config.experts}) >= 2
    assert all(0 < e.size_bytes <= config.memory_budget for e in config.experts)
    # the budget holds one file only: moving between files is a real swap
    sizes = sorted({(e.model, e.size_bytes) for e in config.experts}, key=lambda x: x[1])
    assert sizes[0][1] + sizes[1][1] > config.memory_budget
    assert config.general_expert == "general"


@pytest.mark.parametrize(
    ("value", "expected"),
    [("20GB", 20 * 10**9), ("150 MiB", 150 * 2**20), (1024, 1024), ("1.5KB", 1500)],
)
def test_parse_size(value: object, expected: int) -> None:
    assert parse_size(value, "x") == expected


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("memory_budget: 20GB\nexperts: [\n", "invalid YAML at line"),
        ("experts: []\n", "memory_budget: missing"),
        ("memory_budget: 0\nexperts: []\n", "memory_budget: must be more than 0"),
        ("memory_budget: lots\nexperts: []\n", "expected a size"),
        ("memory_budget: 20GB\nexperts: []\n", "experts: expected a non-empty list"),
    ],
)
def test_top_level_errors(write_config, body: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(write_config(body))


def test_expert_field_errors(write_config, model_a: Path, expert_yaml) -> None:
    def check(expert: str, message: str) -> None:
        with pytest.raises(ConfigError, match=message) as info:
            load_config(write_config("memory_budget: 200MB\nexperts:\n" + expert))
        assert "\n" not in str(info.value)

    check(
        expert_yaml("a", "physics", model_a).replace("domain: physics", 'domain: ""'),
        r"experts\[0\] \(a\)\.domain: missing \(required\)",
    )
    check(expert_yaml("a", "physics", model_a, backend="vllm"), r"\.backend: unknown backend 'vllm'")
    check(expert_yaml("a", "physics", "/nowhere/model.gguf"), r"\.model: model file not found: /nowhere")
    check(expert_yaml("a", "physics", model_a, size="200GB"), "needs 200.0GB, more than memory_budget")
    check(expert_yaml("a", "physics", model_a) + expert_yaml("a", "general", model_a), "duplicate expert name 'a'")
    check("  - name: a\n    domain: physics\n", r"\.runtime: missing|\.model: missing")


def test_missing_file() -> None:
    with pytest.raises(ConfigError, match="experts file not found"):
        load_config("/nowhere/experts.yaml")
