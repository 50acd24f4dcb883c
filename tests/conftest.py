"""Shared fixtures: the real default pool, temporary knowledge bases and small configs."""

from __future__ import annotations

import os
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

from ech0_moe.setup_models import SECOND_COPY, ensure_second_copy, packaged_smollm2

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def model_a() -> Path:
    return packaged_smollm2()


@pytest.fixture(scope="session")
def model_b() -> Path:
    return ensure_second_copy(SECOND_COPY)


@pytest.fixture
def write_config(tmp_path: Path) -> Callable[..., Path]:
    """Write an experts.yaml into tmp_path from a YAML body (dedented)."""

    def write(body: str, name: str = "experts.yaml") -> Path:
        path = tmp_path / name
        path.write_text(textwrap.dedent(body))
        return path

    return write


def expert_yaml(name: str, domain: str, model: Path | str, **extra: str) -> str:
    lines = [
        f"  - name: {name}",
        f"    domain: {domain}",
        "    backend: llamacpp",
        f"    model: {model}",
        f"    system_prompt: You are the {name} expert.",
        f"    description: {domain} questions",
        "    examples: [an example]",
    ]
    lines += [f"    {k}: {v}" for k, v in extra.items()]
    return "\n".join(lines) + "\n"


@pytest.fixture
def two_file_config(write_config: Callable[..., Path], model_a: Path, model_b: Path) -> Path:
    """Three experts over two files; the budget holds one file only."""
    body = "memory_budget: 150MB\nexperts:\n"
    body += expert_yaml("alpha", "mathematics", model_a)
    body += expert_yaml("beta", "physics", model_a)
    body += expert_yaml("gamma", "general", model_b)
    return write_config(body)


@pytest.fixture
def context(tmp_path: Path):
    """Runtime context on the default experts.yaml with a fresh knowledge base and short answers."""
    from graph import Context

    return Context(kb_dir=str(tmp_path / "kb"), max_tokens=16)
