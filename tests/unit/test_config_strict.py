"""experts.yaml is strict: unknown keys with a suggestion, duplicate keys, absurd sizes, every problem listed."""

from __future__ import annotations

from pathlib import Path

import pytest

from ech0_moe.config import check_config, load_config, parse_size
from ech0_moe.errors import ConfigError
from ech0_moe.paths import resolve_model_ref

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
    assert any("(a).max_tokens: expected a number from 1 to 65,536, got 0" in p for p in problems)
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


def test_backend_ray_reads_its_settings_and_resolves_models_on_the_replicas(tmp_path: Path) -> None:
    top = "memory_budget: 1GB\nray: {address: 'ray://head:10001', replicas: 3, replica_budget: 500MB}\n"
    body = pool(
        "  - {name: a, domain: x, backend: ray, model: /on/each/node.gguf, system_prompt: s, description: d}\n",
        "  - {name: b, domain: x, backend: ray, runtime: ollama, model: qwen, system_prompt: s, description: d}\n",
        top=top,
    )
    config = load_config(write(tmp_path, body))
    assert config.ray is not None and config.ray.address == "ray://head:10001" and config.ray.replicas == 3
    assert config.budget_for("ray") == 500_000_000 and config.ray.max_ongoing_requests == 64
    a, b = config.experts
    assert (a.placement, a.runtime, a.model, a.device) == ("ray", "llamacpp", "/on/each/node.gguf", "ray")
    assert (b.runtime, b.model, b.host) == ("ollama", "qwen:latest", "http://127.0.0.1:11434")
    default = pool("  - {name: a, domain: x, backend: ray, model: m.gguf, system_prompt: s, description: d}\n")
    assert load_config(write(tmp_path, default)).ray is not None  # backend ray alone: Ray's defaults


@pytest.mark.parametrize(
    ("extra", "problem"),
    [
        (", backend: ray, runtime: vllm", "(a).runtime: unknown runtime 'vllm' (use llamacpp"),
        (", backend: llamacpp, runtime: ollama", "(a): backend 'llamacpp' and runtime 'ollama' disagree"),
        (", placement: cloud", "(a).placement: unknown placement 'cloud' (use local or ray)"),
        (", backend: ray, size: 2GB", "expert 'a' needs 2.0GB, more than ray.replica_budget 1.0GB"),
    ],
)
def test_backend_ray_mistakes_are_one_line_each(tmp_path: Path, extra: str, problem: str) -> None:
    top = "memory_budget: 1GB\nray: {replica_budget: 1GB}\n" if "size" in extra else "memory_budget: 1GB\n"
    _, problems = check_config(write(tmp_path, pool(EXPERT.format(name="a", extra=extra), top=top)))
    assert any(problem in p for p in problems), problems


def test_backend_ray_serves_the_whole_pool(tmp_path: Path) -> None:
    body = pool(EXPERT.format(name="a", extra=", backend: ray"), EXPERT.format(name="b", extra=", backend: llamacpp"))
    _, problems = check_config(write(tmp_path, body))
    assert any("placement ray serves the whole pool" in p for p in problems), problems


def test_runtime_and_placement_are_read_and_older_files_still_read(tmp_path: Path) -> None:
    """The runtime (what runs a model) and the placement (where the pool runs it) are two keys;
    the older `backend:` still reads as one of them."""
    new = pool(
        "  - {name: a, domain: x, runtime: ollama, model: qwen, system_prompt: s, description: d, size: 1GB}\n",
        "  - {name: b, domain: x, runtime: ollama, placement: local, model: q2, host: 'http://h:1', size: 1GB,"
        " system_prompt: s, description: d}\n",
    )
    a, b = load_config(write(tmp_path, new)).experts
    assert (a.runtime, a.placement, a.host, a.device) == ("ollama", "local", "http://127.0.0.1:11434", a.host)
    old = new.replace("runtime: ollama", "backend: ollama")
    assert load_config(write(tmp_path, old)).experts == (a, b)


def test_yaml_is_bounded_by_its_expanded_nodes_and_errors_quote_little(tmp_path) -> None:
    import time

    from ech0_moe.config import check_config

    chain = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    chain += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 10)]  # 81 aliases, ~550 bytes
    (tmp_path / "bomb.yaml").write_text("\n".join(chain) + "\nmemory_budget: 1GB\n")
    t0 = time.perf_counter()
    _, problems = check_config(tmp_path / "bomb.yaml")
    assert time.perf_counter() - t0 < 1 and problems == [
        f"{tmp_path / 'bomb.yaml'}: invalid YAML: its aliases expand to more than 100,000 nodes"
    ]
    (tmp_path / "long.yaml").write_text("memory_budget: '" + "9" * 500_000 + "'\nexperts: []\n")
    _, problems = check_config(tmp_path / "long.yaml")
    assert problems and all(len(p) < 250 for p in problems), [len(p) for p in problems]


@pytest.mark.parametrize("host", ["http://0177.0.0.1:11434", "http://[::1", "ftp://127.0.0.1"])
def test_an_ollama_host_the_client_cannot_reach_is_refused_when_read(tmp_path: Path, host: str) -> None:
    from ech0_moe.config import check_config

    (tmp_path / "e.yaml").write_text(
        "memory_budget: 1GB\nexperts:\n"
        f'  - {{name: x, domain: general, backend: ollama, model: "m:1", host: "{host}", size: 1GB,'
        " system_prompt: s, description: d}\n"
    )
    _, problems = check_config(tmp_path / "e.yaml")
    assert problems == [
        f"{tmp_path / 'e.yaml'}: experts[0] (x).host: expected a URL such as http://127.0.0.1:11434, got '{host}'"
    ]
