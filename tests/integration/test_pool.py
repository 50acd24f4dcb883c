"""The expert pool with the real SmolLM2 GGUF through llama.cpp."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import pytest

from ech0_moe.config import load_config
from ech0_moe.errors import BackendError, ConfigError
from ech0_moe.serving.local.pool import ExpertPool
from ech0_moe.serving.runtimes.llamacpp import amx_problem, check_build


def test_swaps_between_files_and_shares_a_file(two_file_config: Path) -> None:
    pool = ExpertPool(load_config(two_file_config))
    # before any load: the file's size at 1 GB/s; after: the measured load
    assert pool.expected_load_seconds("alpha") == pytest.approx(pool.specs["alpha"].size_bytes / 1e9)
    first = pool.ensure_loaded("alpha")
    assert first.swapped and first.load_seconds > 0
    assert pool.expected_load_seconds("beta") == round(first.load_seconds, 4)  # beta shares alpha's file
    # beta shares alpha's weights file: no swap, both count as loaded
    assert not pool.ensure_loaded("beta").swapped
    assert set(pool.loaded_experts()) == {"alpha", "beta"}
    # gamma is another file: alpha/beta must be unloaded first
    third = pool.ensure_loaded("gamma")
    assert third.swapped and third.evicted == ("alpha",)
    assert pool.loaded_experts() == ["gamma"]
    stats = pool.stats()
    assert stats["swaps"] == 2
    assert stats["peak_loaded_bytes"] <= stats["budget_bytes"]
    text, acquired = pool.chat("alpha", [{"role": "user", "content": "Say hello."}], max_tokens=8)
    assert text and acquired.swapped
    pool.unload_all()
    assert pool.loaded_experts() == [] and pool.loaded_bytes == 0


def test_budget_holds_under_concurrency(two_file_config: Path) -> None:
    pool = ExpertPool(load_config(two_file_config))
    samples: list[int] = []
    errors: list[BaseException] = []

    def worker(name: str) -> None:
        try:
            for _ in range(3):
                pool.chat(name, [{"role": "user", "content": "Name a colour."}], max_tokens=4)
                samples.append(pool.loaded_bytes)
        except BaseException as exc:  # collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in ("alpha", "gamma", "beta", "gamma")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "deadlock"
    assert not errors
    assert max(samples) <= pool.budget
    assert pool.stats()["peak_loaded_bytes"] <= pool.budget


def test_corrupt_model_fails_cleanly_and_pool_stays_consistent(
    write_config, tmp_path: Path, model_a: Path, expert_yaml
) -> None:
    bad = tmp_path / "corrupt.gguf"
    bad.write_bytes(b"not a gguf at all" * 100)
    header_cut, data_cut = tmp_path / "header-cut.gguf", tmp_path / "data-cut.gguf"
    with open(model_a, "rb") as src:
        head = src.read(60_000_000)
    header_cut.write_bytes(head[:4096])
    data_cut.write_bytes(head)
    body = "memory_budget: 200MB\nexperts:\n" + expert_yaml("good", "general", model_a)
    body += expert_yaml("bad", "physics", bad) + expert_yaml("cut", "chemistry", header_cut)
    body += expert_yaml("half", "biology", data_cut)
    pool = ExpertPool(load_config(write_config(body)))
    pool.ensure_loaded("good")
    with pytest.raises(BackendError, match="not a GGUF file"):
        pool.ensure_loaded("bad")
    with pytest.raises(BackendError, match=r"not a GGUF file \(corrupt or wrong format: the header is cut short\)"):
        pool.ensure_loaded("cut")
    with pytest.raises(BackendError, match="the file is cut short: its tensor data ends early"):
        pool.ensure_loaded("half")
    # refused before anything was evicted: the working model stays; no reservation is left behind
    assert pool.loaded_experts() == ["good"]
    assert pool.loaded_bytes == pool.expected_bytes("good")
    assert not pool.ensure_loaded("good").swapped


def test_the_budget_counts_weights_kv_cache_and_compute_buffer(write_config, model_a: Path, expert_yaml) -> None:
    """The books carry the loaded footprint (file + f16 KV cache + compute buffer), not the file size:
    SmolLM2-135M at n_ctx 2048 is 98.4 MB on disk and 171.8 MB loaded."""
    pool = ExpertPool(
        load_config(write_config("memory_budget: 200MB\nexperts:\n" + expert_yaml("x", "general", model_a)))
    )
    pool.ensure_loaded("x")
    kv, compute = 2048 * 30 * 2 * 192 * 2, 128 * 4 * (49152 + 1536 + 576)  # 47.2 MB + 26.2 MB
    assert pool.loaded_bytes == model_a.stat().st_size + kv + compute
    with pytest.raises(ConfigError, match=r"expert 'x' needs 171.8MB, more than memory_budget 120.0MB"):
        load_config(write_config("memory_budget: 120MB\nexperts:\n" + expert_yaml("x", "general", model_a)))
    understated = expert_yaml("x", "general", model_a, size="100MB")  # a `size:` below the real footprint
    with pytest.raises(ConfigError, match=r"expert 'x' needs 171.8MB, more than memory_budget 120.0MB"):
        load_config(write_config("memory_budget: 120MB\nexperts:\n" + understated))  # the larger one counts


def test_model_deleted_after_start(write_config, tmp_path: Path, model_a: Path, expert_yaml) -> None:
    copy = tmp_path / "copy.gguf"
    shutil.copyfile(model_a, copy)
    pool = ExpertPool(load_config(write_config("memory_budget: 1GB\nexperts:\n" + expert_yaml("x", "general", copy))))
    copy.unlink()
    with pytest.raises(BackendError, match="cannot read model file"):
        pool.ensure_loaded("x")


def test_llamacpp_build_without_amx_is_required() -> None:
    # llama_print_system_info() of a native build on a Sapphire Rapids Xeon, and of `make install`'s
    native = (
        "CPU : SSE3 = 1 | SSSE3 = 1 | AVX = 1 | AVX_VNNI = 1 | AVX2 = 1 | F16C = 1 | FMA = 1 | BMI2 = 1 | "
        "AVX512 = 1 | AVX512_VBMI = 1 | AVX512_VNNI = 1 | AVX512_BF16 = 1 | AMX_INT8 = 1 | OPENMP = 1 | REPACK = 1 |"
    )
    ours = "CPU : SSE3 = 1 | SSSE3 = 1 | AVX = 1 | AVX2 = 1 | F16C = 1 | FMA = 1 | BMI2 = 1 | OPENMP = 1 | REPACK = 1 |"
    problem = amx_problem(native)
    assert problem and "make llama-rebuild" in problem and "\n" not in problem
    assert amx_problem(native, allow=True) is None
    assert amx_problem(ours) is None
    check_build()  # the installed build passes
