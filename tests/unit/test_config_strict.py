"""experts.yaml is strict: unknown keys with a suggestion, duplicate keys, absurd sizes, every problem listed."""

from __future__ import annotations

from pathlib import Path

import pytest

from ech0_moe.config import check_config, load_config, parse_size, resolve_model_ref
from ech0_moe.errors import ConfigError

EXPERT = "  - {{name: {name}, domain: general, model: a.gguf, system_prompt: x, description: y{extra}}}\n"


def write(tmp_path: Path, body: str) -> Path:
    (tmp_path / "a.gguf").write_bytes(b"GGUF")
    path = tmp_path / "experts.yaml"
    path.write_text(body)
    return path


def pool(*experts: str, top: str = "memory_budget: 1GB\ndefaults: {backend: llamacpp}\n") -> str:
    return top + "experts:\n" + "".join(experts)


def test_unknown_keys_name_the_closest_known_one(tmp_path: Path) -> None:
    body = pool(EXPERT.format(name="a", extra=", sytem_prompt: z"), top="memory_budget: 1GB\nroutr: {}\n")
    config, problems = check_config(write(tmp_path, body))
    assert config is None
    assert any(p.endswith("routr: unknown setting (did you mean 'router'?)") for p in problems)
    assert any("experts[0] (a).sytem_prompt: unknown setting (did you mean 'system_prompt'?)" in p for p in problems)


def test_every_problem_is_listed_and_load_raises_the_first(tmp_path: Path) -> None:
    body = pool(
        EXPERT.format(name="a", extra=", size: -1"),
        EXPERT.format(name="a", extra=", max_tokens: 0"),
        "  - {name: b, domain: general, model: gone.gguf, system_prompt: x, description: y}\n",
    )
    path = write(tmp_path, body)
    _, problems = check_config(path)
    assert len(problems) == 4, problems
    assert any("(a).size: must be more than 0" in p for p in problems)
    assert any("(a).max_tokens: expected a number from 1 to 65536, got 0" in p for p in problems)
    assert any("(b).model: model file not found" in p for p in problems)
    assert any("duplicate expert name 'a'" in p for p in problems)
    with pytest.raises(ConfigError, match=r"size: must be more than 0.*\(and 3 more: run `ech0-moe validate`\)"):
        load_config(path)


def test_duplicate_yaml_keys_are_an_error(tmp_path: Path) -> None:
    body = pool(EXPERT.format(name="a", extra="")).replace(
        "memory_budget: 1GB\n", "memory_budget: 1GB\nmemory_budget: 2GB\n"
    )
    with pytest.raises(ConfigError, match="invalid YAML at line 2, column 1: duplicate key 'memory_budget'"):
        load_config(write(tmp_path, body))


@pytest.mark.parametrize("value", [0, -1, ".inf", ".nan", "2PiB", "lots", True])
def test_absurd_budgets_are_one_line(tmp_path: Path, value: object) -> None:
    body = pool(EXPERT.format(name="a", extra=""), top=f"memory_budget: {value}\n")
    with pytest.raises(ConfigError, match="memory_budget: ") as info:
        load_config(write(tmp_path, body))
    assert "\n" not in str(info.value)


def test_parse_size() -> None:
    assert parse_size("20GB", "x") == 20 * 10**9 and parse_size("150 MiB", "x") == 150 * 2**20
    with pytest.raises(ConfigError, match="expected a size"):
        parse_size(float("inf"), "x")


def test_pkg_and_cache_paths_cannot_leave_their_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ECH0_HOME", str(tmp_path))
    with pytest.raises(ConfigError, match="points outside"):
        resolve_model_ref("pkg:json/../../../etc/passwd", tmp_path)
    with pytest.raises(ConfigError, match="points outside"):
        resolve_model_ref("cache:../secret.gguf", tmp_path)
    assert resolve_model_ref("cache:m.gguf", tmp_path) == tmp_path / "models" / "m.gguf"
