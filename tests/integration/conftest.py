"""Integration fixtures: the real default pool (SmolLM2 GGUF files), temporary knowledge
bases, small configs and the `ech0-moe` command in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from ech0_moe.graph import Context
from ech0_moe.services import ServiceRegistry
from ech0_moe.setup_models import ensure_second_copy, packaged_smollm2

ROOT = Path(__file__).resolve().parents[2]
ROUTING_DATA = ROOT / "benchmarks" / "routing-dev.jsonl"  # MMLU, shipped with the benchmarks


@pytest.fixture(scope="session")
def model_a() -> Path:
    return packaged_smollm2()


@pytest.fixture(scope="session")
def model_b() -> Path:
    return ensure_second_copy()


@pytest.fixture
def routing_data() -> Path:
    """The MMLU routing set shipped in benchmarks/ (1,387 questions)."""
    return ROUTING_DATA


@pytest.fixture
def write_config(tmp_path: Path) -> Callable[..., Path]:
    """Write an experts.yaml into tmp_path from a YAML body (dedented)."""

    def write(body: str, name: str = "experts.yaml") -> Path:
        path = tmp_path / name
        path.write_text(textwrap.dedent(body))
        return path

    return write


def _expert_yaml(name: str, domain: str, model: Path | str, **extra: str) -> str:
    """One llama.cpp expert as an experts.yaml list item; `extra` adds or replaces fields."""
    fields = {
        "name": name,
        "domain": domain,
        "runtime": "llamacpp",
        "model": str(model),
        "system_prompt": f"You are the {name} expert.",
        "description": f"{domain} questions",
        "examples": "[an example]",
        **extra,
    }
    lines = [f"    {k}: {v}" for k, v in fields.items()]
    return "  -" + lines[0][3:] + "\n" + "\n".join(lines[1:]) + "\n"


@pytest.fixture
def expert_yaml() -> Callable[..., str]:
    return _expert_yaml


@pytest.fixture
def two_file_config(write_config: Callable[..., Path], model_a: Path, model_b: Path) -> Path:
    """Three experts over two files; the budget holds one file only."""
    body = "memory_budget: 200MB\nexperts:\n"
    body += _expert_yaml("alpha", "mathematics", model_a)
    body += _expert_yaml("beta", "physics", model_a)
    body += _expert_yaml("gamma", "general", model_b)
    return write_config(body)


@pytest.fixture
def context(tmp_path: Path) -> Context:
    """Runtime context on the shipped experts.yaml with a fresh knowledge base and short answers."""
    return Context(experts_file=str(ROOT / "experts.yaml"), kb_dir=str(tmp_path / "kb"), max_tokens=16)


def _run_cli(*args: str, kb: Path | None = None, timeout: int = 180, stdin: str | None = None):
    """`ech0-moe ARGS` in a subprocess, from the checkout (so ./experts.yaml is the shipped pool)."""
    cmd = [sys.executable, "-m", "ech0_moe.cli", *args]
    if kb is not None:
        cmd += ["--kb", str(kb)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT, env=env, input=stdin)


@pytest.fixture
def run_cli() -> Callable[..., subprocess.CompletedProcess[str]]:
    return _run_cli


def _assert_one_line_error(proc: subprocess.CompletedProcess[str], message: str) -> None:
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("ech0-moe: error: ") and message in lines[0], lines[0]
    assert "Traceback" not in proc.stderr and proc.stdout == ""


@pytest.fixture
def assert_one_line_error() -> Callable[[subprocess.CompletedProcess[str], str], None]:
    return _assert_one_line_error


@pytest.fixture
def ollama_config(write_config: Callable[..., Path]) -> Callable[..., Path]:
    def make(hosts: list[str], name: str = "experts.yaml", extra: str = "") -> Path:
        """Experts a/b on model files A/B; with two hosts, a on the first and b on the second."""
        body = f"memory_budget: 150MB\n{extra}defaults: {{backend: ollama, system_prompt: Be brief., description: x}}\n"
        body += "experts:\n"
        body += f'  - {{name: a, domain: mathematics, model: "smollm2:135m", host: "{hosts[0]}"}}\n'
        body += f'  - {{name: b, domain: general, model: "smollm2-b:135m", host: "{hosts[-1]}"}}\n'
        return write_config(body, name)

    return make


@pytest.fixture
def ollama_ps() -> Callable[[str], list[str]]:
    """Names of the models an Ollama(-protocol) host holds (GET /api/ps)."""
    return lambda url: [m["name"] for m in httpx.get(f"{url}/api/ps").json()["models"]]


@pytest.fixture
def registry() -> ServiceRegistry:
    """A fresh registry per test: its own pool per experts file, so swap counts start at zero."""
    return ServiceRegistry()


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_process(argv: list[str], log: Path, ready: str, what: str, **popen: object) -> subprocess.Popen:
    """A server process of the tests' own (its output in `log`, its own session), once `ready` (a
    URL) answers 200; it is killed and the test fails with the log's tail if that takes 120 s."""
    import signal
    import time

    with open(log, "w") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, **popen)  # type: ignore[call-overload]
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            if httpx.get(ready, timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGKILL)
    pytest.fail(f"{what} did not start:\n{log.read_text()[-3000:]}")
