"""Bad input, faults and kills: one clear error line, consistent state, nothing stored lost."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ech0_moe.config import load_config
from ech0_moe.graph import Context, build_graph
from ech0_moe.memory.kb import KnowledgeBase
from tests.integration.fake_ollama import FakeOllamaServer

ROOT = Path(__file__).resolve().parents[2]


def yaml_file(tmp_path: Path, name: str, body: str) -> str:
    path = tmp_path / name
    path.write_text(body)
    return str(path)


def bad_inputs(tmp: Path, model_a: Path, expert_yaml) -> list[tuple[str, list[str], str]]:
    """(case, CLI arguments, the error line's text) - the table in the README."""
    good = "memory_budget: 200MB\nexperts:\n"
    corrupt = tmp / "corrupt.gguf"
    corrupt.write_bytes(b"GGUF" + b"\0" * 4096)
    blocker = tmp / "a-file"
    blocker.write_text("x")
    return [
        ("empty query", ["ask", "  "], "empty query: ask a question"),
        ("huge query", ["ask", "x" * 40_000], "query too long: 40000 characters (limit 32000)"),
        ("unknown mode", ["ask", "hi", "--mode", "turbo"], "unknown mode 'turbo'; use one of optimized, fast, basic"),
        ("missing experts.yaml", ["experts", "--experts", str(tmp / "none.yaml")], "experts file not found"),
        (
            "broken experts.yaml",
            ["experts", "--experts", yaml_file(tmp, "broken.yaml", "memory_budget: 1GB\nexperts:\n  - name: [x\n")],
            "invalid YAML at line 4, column 1",
        ),
        (
            "unknown runtime",
            [
                "experts",
                "--experts",
                yaml_file(tmp, "vllm.yaml", good + expert_yaml("x", "general", model_a, runtime="vllm")),
            ],
            "experts[0] (x).runtime: unknown runtime 'vllm' (use llamacpp, ollama or openai)",
        ),
        (
            "missing GGUF",
            [
                "experts",
                "--experts",
                yaml_file(tmp, "gone.yaml", good + expert_yaml("x", "general", tmp / "gone.gguf")),
            ],
            "experts[0] (x).model: model file not found:",
        ),
        (
            "corrupt GGUF",
            [
                "ask",
                "hi",
                "--mode",
                "basic",
                "--experts",
                yaml_file(tmp, "bad.yaml", good + expert_yaml("x", "general", corrupt)),
            ],
            "llama.cpp could not load",
        ),
        (
            "expert bigger than the budget",
            [
                "experts",
                "--experts",
                yaml_file(tmp, "big.yaml", good.replace("200MB", "50MB") + expert_yaml("x", "general", model_a)),
            ],
            "expert 'x' needs 171.8MB, more than memory_budget 50.0MB",
        ),
        (
            "budget 0",
            ["experts", "--experts", yaml_file(tmp, "zero.yaml", "memory_budget: 0\nexperts: []\n")],
            "memory_budget: must be more than 0",
        ),
        (
            "duplicate expert names",
            [
                "experts",
                "--experts",
                yaml_file(
                    tmp, "dup.yaml", good + expert_yaml("x", "general", model_a) + expert_yaml("x", "physics", model_a)
                ),
            ],
            "duplicate expert name 'x'",
        ),
        (
            "unreachable Ollama host",
            [
                "ask",
                "hi",
                "--mode",
                "basic",
                "--experts",
                yaml_file(
                    tmp,
                    "far.yaml",
                    (
                        'memory_budget: 1GB\nexperts:\n  - {name: x, domain: general, backend: ollama, model: "m:1", '
                        'host: "http://127.0.0.1:9", size: 1GB, system_prompt: s, description: d}\n'
                    ),
                ),
            ],
            "Ollama at http://127.0.0.1:9 is unreachable",
        ),
        ("unwritable knowledge-base folder", ["kb", "stats", "--kb", str(blocker / "kb")], "is not writable"),
        (
            "unknown setting",
            [
                "experts",
                "--experts",
                yaml_file(tmp, "typo.yaml", good + expert_yaml("x", "general", model_a, sytem_prompt="s")),
            ],
            "experts[0] (x).sytem_prompt: unknown setting (did you mean 'system_prompt'?)",
        ),
        (
            "duplicate YAML key",
            ["experts", "--experts", yaml_file(tmp, "twice.yaml", "memory_budget: 1GB\nmemory_budget: 2GB\n")],
            "invalid YAML at line 2, column 1: duplicate key 'memory_budget'",
        ),
        ("out-of-range setting", ["ask", "hi", "--top-k", "1000000000"], "top_k must be a whole number from 1 to 50"),
        ("negative answer length", ["ask", "hi", "--max-tokens", "-1"], "max_tokens must be a whole number from 0"),
        ("compression target 0", ["ask", "hi", "--compression-target", "0"], "compression_target must be more than 0"),
        (
            "query too long for the expert's context window",
            ["ask", "word " * 3000, "--mode", "basic"],
            "query too long for expert '",
        ),
        ("undecodable query", ["ask", "caf\udce9?"], "query is not valid text"),
        ("bad batch rows", ["batch", yaml_file(tmp, "rows.jsonl", "[1, 2]\n")], "rows.jsonl:1: expected a JSON object"),
        *third_round(tmp, model_a, expert_yaml),
    ]


def third_round(tmp: Path, model_a: Path, expert_yaml) -> list[tuple[str, list[str], str]]:
    """Inputs that gave `unexpected failure (...)` or were accepted and meant something else."""
    good = "memory_budget: 200MB\nexperts:\n"
    one = expert_yaml("x", "general", model_a)
    bomb = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join([f'*{chr(97 + i)}'] * 9)}]\n" for i in range(12)
    )

    bomb81 = "a0: &a0 [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]\n" for i in range(1, 10)
    )  # 81 aliases, under the alias cap, expanding to 387 million nodes

    def pool(name: str, body: str) -> list[str]:
        return ["experts", "--experts", yaml_file(tmp, name, body)]

    return [
        ("invisible query", ["ask", "\u200b\u200d\u2060"], "empty query: ask a question"),
        ("YAML complex key", pool("complex.yaml", "? [a]\n: b\n"), "a key must be plain text"),
        ("YAML alias bomb", pool("bomb.yaml", bomb), "invalid YAML: its aliases expand to more than"),
        ("general_expert a list", pool("gen.yaml", good + one + "general_expert: [x]\n"), "general_expert: expected"),
        (
            "host not a URL",
            pool("host.yaml", good + expert_yaml("x", "g", "m:1", runtime="ollama", host="'http://[::1'")),
            ".host: expected a URL",
        ),
        (
            "pkg: of a missing package",
            pool("pkg.yaml", good + expert_yaml("x", "g", "pkg:nonexistent_pkg.sub/x.gguf")),
            "package 'nonexistent_pkg.sub' for model",
        ),
        ("budget 0.5", pool("half.yaml", "memory_budget: 0.5\nexperts:\n" + one), "got 0.5 (at least 1 byte)"),
        (
            "n_ctx 2048.5",
            pool("ctx.yaml", good + expert_yaml("x", "g", model_a, n_ctx="2048.5")),
            "n_ctx: expected a whole number, got 2048.5",
        ),
        (
            "expert name with a newline",
            pool("name.yaml", good + expert_yaml('"a\\nb"', "g", model_a)),
            ".name: expected",
        ),
        (
            "hosts key not a URL",
            pool("hosts.yaml", good + one + "hosts: {notaurl: 1GB}\n"),
            "hosts: expected an Ollama URL",
        ),
        ("kb search --k 0", ["kb", "search", "anything", "--k", "0"], "k must be a whole number from 1 to 50, got 0"),
        (
            "kb search --max-distance nan",
            ["kb", "search", "x", "--max-distance", "nan"],
            "max_distance must be from 0 to 2, got nan",
        ),
        ("router fit --split 0", ["router", "fit", "--split", "0", "--out", str(tmp / "r.npz")], "--split must be"),
        (
            "router fit --out in a missing folder",
            ["router", "fit", "--out", "/proc/nonexistent/x.npz"],
            "no such folder",
        ),
        ("YAML of 81 aliases", pool("bomb81.yaml", bomb81), "its aliases expand to more than 100,000 nodes"),
        (
            "host the client cannot reach",
            pool("octal.yaml", good + expert_yaml("x", "g", "m:1", runtime="ollama", host="'http://0177.0.0.1:11434'")),
            ".host: expected a URL",
        ),
        ("the shared namespace as asker", ["ask", "hi", "--user", "shared"], "is the namespace every asker reads"),
        ("a bad namespace", ["kb", "stats", "--namespace", "a b"], "namespace must be letters"),
    ]


def test_bad_inputs_table(tmp_path: Path, model_a: Path, run_cli, assert_one_line_error, expert_yaml) -> None:
    kb = tmp_path / "kb"
    kb_store = KnowledgeBase(kb)
    kb_store.learn("What is the capital of France?", "Paris.", expert="general", domain="general", mode="x")
    from concurrent.futures import ThreadPoolExecutor

    cases = bad_inputs(tmp_path, model_a, expert_yaml)
    with ThreadPoolExecutor(2) as pool:  # two processes at a time: each is mostly its own start-up
        argvs = [args if "--kb" in args else [*args, "--kb", str(kb)] for _, args, _ in cases]
        procs = pool.map(lambda argv: run_cli(*argv), argvs)
        for (case, _, message), proc in zip(cases, procs, strict=True):
            try:
                assert_one_line_error(proc, message)
            except AssertionError as exc:
                raise AssertionError(f"{case}: {exc}") from None
    assert KnowledgeBase(kb).count() == 1  # nothing stored was lost along the way


def test_backend_failing_mid_answer_is_retried_then_reported(
    write_config, model_a: Path, model_b: Path, tmp_path, ollama_config, ollama_ps, registry
):
    server = FakeOllamaServer({"smollm2:135m": model_a, "smollm2-b:135m": model_b})
    url = server.start()
    try:
        ctx = Context(experts_file=str(ollama_config([url])), kb_dir=str(tmp_path / "kb"), max_tokens=6)
        graph = build_graph(services=registry)
        # one crash mid-stream: the retry policy asks again and the answer arrives
        server.state.crash_next = 1
        ok = graph.invoke({"query": "What is 2 + 2?", "mode": "optimized", "expert": "a"}, context=ctx)
        assert ok["solution"] and not ok["error"]
        # the runner keeps crashing: a clear error in the result, nothing learned, pool == /api/ps
        server.state.crash_next = 10
        failed = graph.invoke({"query": "What is 3 + 3?", "mode": "optimized", "expert": "a"}, context=ctx)
        assert failed["solution"] == ""
        assert "answer failed after 3 attempts" in failed["error"]
        assert "llama runner process has terminated" in failed["error"]
        pool = registry.for_run(ctx.experts_file, ctx.kb_dir).pool
        pool.ensure_loaded("b")  # the pool reconciles with the host before deciding anything
        assert {pool.specs[n].model for n in pool.loaded_experts()} == set(ollama_ps(url))
        assert KnowledgeBase(ctx.kb_dir).search("What is 3 + 3?", k=4, max_distance=0.1) == []
        # a stream cut before its final record is not an answer: retried, then reported
        server.state.crash_next = 0
        server.state.cut_next = 1
        again = graph.invoke({"query": "What is 4 + 4?", "mode": "basic", "expert": "a"}, context=ctx)
        assert again["solution"] and not again["error"]
        server.state.cut_next = 10
        cut = graph.invoke({"query": "What is 5 + 5?", "mode": "optimized", "expert": "a"}, context=ctx)
        assert cut["solution"] == "" and "the answer was cut off mid-stream" in cut["error"]
        assert KnowledgeBase(ctx.kb_dir).search("What is 5 + 5?", k=4, max_distance=0.1) == []
    finally:
        server.stop()


def test_sigkill_during_learn_keeps_every_committed_entry(tmp_path: Path) -> None:
    kb_dir = tmp_path / "kb"
    script = (
        "import sys\n"
        "from ech0_moe.memory.kb import KnowledgeBase\n"
        f"kb = KnowledgeBase({str(kb_dir)!r})\n"
        "for i in range(10_000):\n"
        "    kb.learn(f'What is {i} times {i + 7}?', f'It is {i * (i + 7)}.', expert='math', domain='mathematics',"
        " mode='optimized')\n"
        "    print(i, flush=True)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    committed = -1
    deadline = time.time() + 120
    while committed < 15 and time.time() < deadline:
        committed = int(proc.stdout.readline())
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    kb = KnowledgeBase(kb_dir)
    assert kb.count() >= committed + 1
    hit = kb.search("What is 3 times 10?", k=1)[0]
    assert hit.kind == "learned" and "30" in hit.text


def test_learned_answers_carry_provenance_and_can_be_forgotten(tmp_path: Path, run_cli, registry) -> None:
    ctx = Context(kb_dir=str(tmp_path / "kb"), max_tokens=256)  # complete answers: truncated ones are not learned
    graph = build_graph(services=registry)
    first = graph.invoke({"query": "What gas do plants absorb for photosynthesis?"}, context=ctx)
    assert first["truncated"] is False
    again = graph.invoke({"query": "Which gas do plants take in during photosynthesis?"}, context=ctx)
    learned = [c for c in again["retrieved_contexts"] if c["kind"] == "learned"]
    assert learned and learned[0]["source"] == f"learned:{first['expert_used']}"
    assert learned[0]["id"].startswith("learned-")
    listing = json.loads(run_cli("kb", "search", "plants photosynthesis gas", "--json", "--kb", ctx.kb_dir).stdout)
    assert listing[0]["kind"] == "learned"
    proc = run_cli("kb", "forget", learned[0]["id"], "--json", "--kb", ctx.kb_dir)
    assert json.loads(proc.stdout) == {"removed": 1}
    assert KnowledgeBase(ctx.kb_dir).count() == 0


def test_config_error_names_the_file(tmp_path: Path) -> None:
    body = (ROOT / "experts.yaml").read_text().replace("    system_prompt: You are a physicist.", "    sytem_prompt: x")
    path = tmp_path / "experts.yaml"
    path.write_text(body)
    message = (
        r"experts.yaml: experts\[1\] \(physics\)\.sytem_prompt: unknown setting \(did you mean 'system_prompt'\?\)"
    )
    with pytest.raises(Exception, match=message):
        load_config(path)
