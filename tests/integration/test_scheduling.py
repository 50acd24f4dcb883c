"""Swap scheduling with the real model: affinity batches, early-stopping ensemble, budget under load."""

from __future__ import annotations

import json
import os
import random
import threading
import time
from pathlib import Path

from ech0_moe.batch import plan, solve_batch
from ech0_moe.bench.swap import SWAP_QUESTIONS
from ech0_moe.graph import Context, build_graph


def test_affinity_batch_swaps_once_per_file_and_keeps_input_order(tmp_path: Path, registry) -> None:
    ctx = Context(kb_dir=str(tmp_path / "kb"), max_tokens=4)
    svc = registry.for_run(ctx.experts_file, ctx.kb_dir)
    svc.pool.unload_all()
    questions = list(SWAP_QUESTIONS)
    random.Random(3).shuffle(questions)
    _, decisions = plan(svc, questions, "affinity")
    experts = [d.expert for d in decisions]
    files = {svc.pool.specs[e].model_key for e in experts}
    before = svc.pool.swaps
    results = solve_batch(questions, ctx, registry, progress=False)
    assert [r["query"] for r in results] == questions
    assert [r["expert_used"] for r in results] == experts
    assert svc.pool.swaps - before == len(files) == 2
    assert svc.pool.stats()["peak_loaded_bytes"] <= svc.pool.budget
    # the same batch in arrival order swaps far more often
    svc.pool.unload_all()
    before = svc.pool.swaps
    solve_batch(questions, ctx, registry, order="fifo", progress=False)
    assert svc.pool.swaps - before > len(files)


def test_batch_cli(tmp_path: Path, run_cli) -> None:
    data = tmp_path / "batch.jsonl"
    questions = ["What is 2 + 2?", "What do lungs do?", "What is 3 + 5?", "What does the liver do?"]
    data.write_text("\n".join(json.dumps({"question": q}) for q in questions) + "\n")
    proc = run_cli("batch", str(data), "--max-tokens", "4", kb=tmp_path / "kb")
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [r["query"] for r in lines[:-1]] == questions
    summary = lines[-1]["summary"]
    assert summary["swaps"] == 2 and summary["peak_loaded_bytes"] <= summary["budget_bytes"]
    assert "batch (affinity)" in proc.stderr  # progress bar


def test_ensemble_stops_early_when_answers_agree(
    write_config, model_a: Path, tmp_path: Path, expert_yaml, registry
) -> None:
    same = "    system_prompt: Answer in one word.\n"
    body = "memory_budget: 200MB\nexperts:\n"
    for name, domain in (("one", "general"), ("two", "physics"), ("three", "chemistry")):
        body += expert_yaml(name, domain, model_a).replace(f"    system_prompt: You are the {name} expert.\n", same)
    ctx = Context(experts_file=str(write_config(body)), kb_dir=str(tmp_path / "kb"), max_tokens=6, ensemble_k=3)
    result = build_graph(services=registry).invoke(
        {"query": "What colour is the sky?", "mode": "ensemble"}, context=ctx
    )
    answered = [k for k in result["timings"] if k.startswith("answer:")]
    assert len(answered) == 2  # identical experts agree: the third never runs
    assert result["solution"]


def _resident_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def test_budget_holds_with_32_concurrent_graph_invocations_by_books_and_by_rss(tmp_path: Path, registry) -> None:
    """32 invokes at once over every mode: the pool's books and the process's resident growth (RSS
    above the same process with everything warm but no model loaded) both stay within the budget."""
    from ech0_moe.serving.runtimes.llamacpp import release_freed_memory

    ctx = Context(kb_dir=str(tmp_path / "kb"), max_tokens=4)
    pool = registry.for_run(ctx.experts_file, ctx.kb_dir).pool
    graph = build_graph(services=registry)
    questions = (list(SWAP_QUESTIONS) * 4)[:32]
    modes = ("basic", "fast", "optimized", "ensemble")
    books: list[int] = []
    resident: list[int] = []
    errors: list[BaseException] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            books.append(pool.loaded_bytes)
            resident.append(_resident_bytes() - baseline)
            time.sleep(0.002)

    def ask(q: str, mode: str) -> None:
        try:
            graph.invoke({"query": q, "mode": mode}, context=ctx)
        except BaseException as exc:  # collected and asserted below
            errors.append(exc)

    def burst() -> list[threading.Thread]:
        threads = [threading.Thread(target=ask, args=(q, modes[i % 4])) for i, q in enumerate(questions)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=300)
        return threads

    burst()  # warm: encoders, Chroma, llama.cpp's one-time setup, the allocator's per-thread arenas
    pool.unload_all()
    release_freed_memory()
    baseline = _resident_bytes()
    sampler = threading.Thread(target=sample)
    sampler.start()
    t0 = time.time()
    threads = burst()
    stop.set()
    sampler.join()
    assert len(threads) == 32 and not any(t.is_alive() for t in threads), "deadlock"
    assert not errors, errors
    assert time.time() - t0 < 300
    assert max(books) <= pool.budget and pool.stats()["peak_loaded_bytes"] <= pool.budget
    assert max(resident) <= pool.budget, f"resident growth {max(resident) / 1e6:.1f}MB, budget {pool.budget / 1e6}MB"


def test_bench_swap_json(tmp_path: Path, run_cli) -> None:
    proc = run_cli(
        *("bench", "swap", "--json", "--max-tokens", "8", "--clients", "8", "--burst-experts", "4"),
        kb=tmp_path / "kb",
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["within_budget"] and len(result["load"]) == 2
    assert {"cold", "warm"} <= set(result["load"][0])
    assert result["batch"]["affinity"]["swaps"] == result["batch"]["distinct_files"]
    assert result["batch"]["fifo"]["swaps"] >= result["batch"]["affinity"]["swaps"]
    assert {"overhead", "direct_seconds", "graph_seconds"} <= set(result["graph_overhead"])
    assert {"sequential", "with_prefetch", "saved_seconds_per_query"} <= set(result["prefetch"])
    (row,) = result["concurrent"]  # 8 concurrent invokes over 4 experts on the two files, cold
    assert row["errors"] == 0 and row["weights_files"] == 2 and row["within_load_bound"], row
