"""Hostile input at the boundary: one clear line, never a traceback from deep inside."""

from __future__ import annotations

from pathlib import Path

import pytest

from ech0_moe.datasets import load_jsonl
from ech0_moe.errors import Ech0Error, InputError
from ech0_moe.serving.runtimes.http import is_loopback
from ech0_moe.text import check_query


def test_undecodable_or_non_text_queries() -> None:
    with pytest.raises(InputError, match=r"query is not valid text .*position 6"):
        check_query("hello \udcff there")  # a lone surrogate: what undecodable argv bytes become
    with pytest.raises(InputError, match="query must be text, got list"):
        check_query(["hi"])


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"[1, 2]\n", r"1: expected a JSON object, got list"),
        (b"42\n", r"1: expected a JSON object, got int"),
        (b'{"question": "\xff"}\n', r"not UTF-8 text \(byte 14\)"),
        (b"[" * 100_000 + b"\n", r"1: (JSON nested too deeply|not JSON)"),
        (b"\n\n", r"no rows"),
    ],
)
def test_bad_data_files_are_one_line(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "rows.jsonl"
    path.write_bytes(content)
    with pytest.raises(Ech0Error, match=message) as info:
        load_jsonl(path, ())
    assert "\n" not in str(info.value)


def test_loopback_hosts_bypass_proxies() -> None:
    assert is_loopback("http://127.0.0.1:11434") and is_loopback("http://localhost:11434")
    assert is_loopback("http://[::1]:11434") and not is_loopback("http://gpu-box:11434")


def test_a_query_longer_than_the_experts_context_window_is_refused_before_any_load(services, tmp_path, fake) -> None:
    from ech0_moe.graph import Context, build_graph

    ctx = Context(experts_file=str(tmp_path / "experts.yaml"), kb_dir=str(tmp_path / "kb"), mode="basic")
    with pytest.raises(InputError, match=r"query too long for expert 'general': about \d+ tokens .* \(n_ctx\) is 2048"):
        build_graph(services=services).invoke({"query": "word " * 2000}, context=ctx)
    assert fake.loads == []
