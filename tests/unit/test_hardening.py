"""Inputs that used to be accepted and meant something else: loopback spellings, `pkg:` names."""

from __future__ import annotations

import subprocess
import sys

import pytest

from ech0_moe.serving.runtimes.http import is_loopback


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:11434",
        "http://127.1:11434",
        "http://0.0.0.0:11434",
        "http://[::ffff:127.0.0.1]:11434",
        "http://localhost.:11434",
        "http://2130706433:11434",
        "http://[::1]:11434",
        "http://api.localhost:11434",
    ],
)
def test_every_loopback_spelling_bypasses_the_proxy(url: str) -> None:
    assert is_loopback(url)


@pytest.mark.parametrize("url", ["http://10.0.0.1:11434", "http://example.com", "http://[::1", "http://128.0.0.1"])
def test_other_hosts_are_not_loopback(url: str) -> None:
    assert not is_loopback(url)


def test_a_pkg_reference_imports_nothing() -> None:
    code = (
        "from pathlib import Path\n"
        "from ech0_moe.paths import resolve_model_ref\n"
        "import sys\n"
        "print(resolve_model_ref('pkg:this.x/x.gguf', Path('.')) if False else None)\n"
        "from ech0_moe.errors import ConfigError\n"
        "try:\n"
        "    resolve_model_ref('pkg:this.x/x.gguf', Path('.'))\n"
        "except ConfigError as e:\n"
        "    print('refused:', e)\n"
        "print('this' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60).stdout
    assert "Beautiful is better than ugly" not in out  # the Zen of Python: `this` was imported
    assert out.strip().endswith("False") and "refused: package 'this.x'" in out


def test_a_line_without_spaces_is_cut_into_chunks() -> None:
    from ech0_moe.text import chunk_text

    chunks = chunk_text("x" * 5_000_000)
    assert len(chunks) > 1000 and max(len(text) for _, text in chunks) <= 4_100


def test_rays_slow_scheduling_warning_is_not_a_placement_failure() -> None:
    from ech0_moe.serving.ray_serve.admin import fits

    assert fits("{'CPU': 1.0}", "{'CPU': 2.0, 'memory': 1e9}")  # room: only slow to schedule
    assert not fits("{'CPU': 1.0, 'GPU': 1.0}", "{'CPU': 8.0}")  # no GPU: it cannot be placed
    assert not fits("not a dict", "{}")
