"""The `ech0-moe` command as a user runs it: real processes, real model, real files."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from ech0_moe.bench.peers import SEMANTIC_ROUTER

ROOT = Path(__file__).resolve().parents[2]


def test_ask_json_has_the_metadata(tmp_path: Path, run_cli) -> None:
    proc = run_cli("ask", "What is the time complexity of binary search?", "--json", "--max-tokens", "12", kb=tmp_path)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["expert_used"] == "computing" and out["mode"] == "optimized"
    assert out["swapped"] is True and out["load_seconds"] > 0
    for key in ("route_scores", "compression_ratio", "retrieved_contexts", "timings", "solution"):
        assert key in out
    assert set(out["timings"]) == {"retrieve", "compress", "route", "swap_load", "answer", "learn"}


def test_experts_and_route_load_no_model(run_cli) -> None:
    proc = run_cli("experts", "--json")
    assert proc.returncode == 0, proc.stderr
    listing = json.loads(proc.stdout)
    assert len(listing["experts"]) == 8 and listing["memory_budget"] == 200_000_000
    proc = run_cli("route", "Balance the equation for burning propane.", "--json")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["expert"] == "chemistry" and out["domain"] == "chemistry"
    assert set(out) >= {"expert", "domain", "scores", "confidence", "seconds"}


def test_demo_shows_routing_swaps_and_timings(tmp_path: Path, run_cli) -> None:
    proc = run_cli("demo", "--max-tokens", "8", kb=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "SWAP" in proc.stdout and "no swap" in proc.stdout
    assert "timings: " in proc.stdout and "-> biology" in proc.stdout
    assert "peak loaded 171.8MB of 200.0MB budget" in proc.stdout  # weights + KV cache + compute buffer


def test_bad_inputs_get_one_line(tmp_path: Path, model_a: Path, run_cli, assert_one_line_error, expert_yaml) -> None:
    assert_one_line_error(run_cli("ask", "   ", kb=tmp_path), "empty query")
    assert_one_line_error(run_cli("route", "", kb=tmp_path), "empty query")
    assert_one_line_error(run_cli("ask", "hi", "--mode", "turbo", kb=tmp_path), "unknown mode 'turbo'")
    broken = tmp_path / "broken.yaml"
    broken.write_text("memory_budget: 20GB\nexperts:\n  - name: [unclosed\n")
    assert_one_line_error(run_cli("ask", "hi", "--experts", str(broken)), "invalid YAML at line 4")
    assert_one_line_error(run_cli("experts", "--experts", str(tmp_path / "none.yaml")), "experts file not found")
    missing = tmp_path / "missing.yaml"
    missing.write_text("memory_budget: 20GB\nexperts:\n" + expert_yaml("x", "general", tmp_path / "gone.gguf"))
    assert_one_line_error(run_cli("experts", "--experts", str(missing)), "model file not found")
    big = tmp_path / "big.yaml"
    big.write_text("memory_budget: 50MB\nexperts:\n" + expert_yaml("x", "general", model_a))
    assert_one_line_error(run_cli("experts", "--experts", str(big)), "more than memory_budget 50.0MB")
    one = tmp_path / "one.jsonl"
    one.write_text('{"question": "What is 2 + 2?", "domain": "mathematics"}\n')
    folds = run_cli("bench", "routing", "--data", str(one), "--folds", "1")
    assert_one_line_error(folds, "--folds must be at least 2")
    proc = run_cli("ask")
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1


def test_bench_routing_prints_json_last(tmp_path: Path, run_cli, assert_one_line_error, routing_data: Path) -> None:
    rows = routing_data.read_text().splitlines()[::8]  # an eighth of the dev set: a quicker run
    data = tmp_path / "dev-eighth.jsonl"
    data.write_text("\n".join(rows) + "\n")
    args = ["--map", str(ROOT / "examples" / "pool-16-subjects.yaml"), "--data", str(data), "--folds", "3"]
    proc = run_cli("bench", "routing", "--experts", str(ROOT / "examples" / "pool-16.yaml"), *args, "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["experts"] == 16 and result["n"] == len(rows)
    assert result["with_data"]["protocol"].startswith("3-fold cross-validation")
    ours = {s: result[s]["router"] for s in ("pool_only", "pool_and_written", "with_data")}
    assert len(ours["with_data"]["per_expert"]) == 16
    assert ours["with_data"]["macro_accuracy"] > ours["pool_and_written"]["macro_accuracy"] > 0.3
    assert 0 <= ours["with_data"]["calibration_error"] <= 0.2 and result["median_ms"] < 50
    for setting in ours:  # the peers on the same features and rows, in the same run
        peers = {"logistic_regression", "nearest_neighbours_5", SEMANTIC_ROUTER}
        assert peers <= set(result[setting]) and result[setting]["best_baseline"] in peers
    assert "fit folds" in proc.stderr  # progress
    unmapped = run_cli("bench", "routing", "--experts", str(ROOT / "examples" / "pool-16.yaml"), "--data", str(data))
    assert_one_line_error(unmapped, "has 2 experts in the pool: give rows an 'expert', or --map")


def test_bench_compress_and_rag_meet_their_goals(run_cli) -> None:
    proc = run_cli("bench", "compress", "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    for row in result["ratios"]:
        assert row["achieved_max_error"] <= 0.05
        assert row["answer_retention"] >= 0.95 and row["key_fact_retention"] >= 0.9
    assert result["ms_per_1k_tokens_max"] <= 20
    proc = run_cli("bench", "rag", "--json")
    assert proc.returncode == 0, proc.stderr
    rag = json.loads(proc.stdout.strip().splitlines()[-1])
    fused, dense = rag["documents"]["fused"], rag["documents"]["dense"]
    assert rag["learned_paraphrase:weights"]["recall@4"] >= 0.9 and fused["original"]["recall@4"] >= 0.95
    for kind in ("original", "paraphrase"):  # fused is never worse than its best part (within a point)
        best = max(rag["documents"][m][kind]["recall@1"] for m in ("dense", "lexical"))
        assert fused[kind]["recall@1"] >= best - 0.01, (kind, fused[kind], best)
    assert fused["original"]["mrr"] >= dense["original"]["mrr"] and set(rag["documents"]) == {
        "fused",
        "dense",
        "lexical",
    }
    assert rag["ingest_chunks_per_second"] > 0 and fused["median_search_ms"] > 0


def test_bench_vote_meets_its_goals_on_pairs_it_was_not_tuned_on(run_cli) -> None:
    """The real encoder; exam pairs derived from the shipped MMLU options, split before tuning."""
    from ech0_moe.vote import AGREE_SIMILARITY

    proc = run_cli("bench", "vote", "--json")
    assert proc.returncode == 0, proc.stderr
    vote = json.loads(proc.stdout.strip().splitlines()[-1])
    assert vote["pairs"]["exam"] >= 500 and vote["threshold_best_on_tuning"] == AGREE_SIMILARITY
    test = vote["parts"]["exam:test"]["agreement"]
    assert test["accuracy"] >= 0.90 and test["short"]["precision"] >= 0.95, test
    for part in vote["parts"].values():  # the baseline beside it, in the same run
        assert part["agreement"]["accuracy"] > part["cosine_only"]["accuracy"]


def test_bench_rag_on_any_question_passage_file(run_cli, tmp_path: Path) -> None:
    rows = [
        {
            "question": "Which gasket does the pump use?",
            "answers": ["QX-4471"],
            "passages": ["The pump uses gasket QX-4471, rated for 90 degrees.", "The valve body is cast brass."],
        },
        {
            "question": "What is the valve body made of?",
            "answers": ["brass"],
            "passages": ["The valve body is cast brass."],
        },
    ]
    data = tmp_path / "rag.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in rows))
    proc = run_cli("bench", "rag", "--data", str(data), "--json")
    assert proc.returncode == 0, proc.stderr
    rag = json.loads(proc.stdout.strip().splitlines()[-1])
    assert rag["n"] == 2 and rag["chunks"] == 2 and rag["documents"]["fused"]["original"]["recall@4"] == 1.0


def test_kb_commands(tmp_path: Path, run_cli, assert_one_line_error) -> None:
    docs = ROOT / "benchmarks" / "docs"
    added = run_cli("kb", "add", str(docs / "libffi.md"), str(docs / "zstd.md"), "--json", kb=tmp_path)
    assert added.returncode == 0, added.stderr
    assert json.loads(added.stdout)["added"] == 2 and "kb add" in added.stderr  # progress bar
    hits = json.loads(run_cli("kb", "search", "What does FFI stand for?", "--json", kb=tmp_path).stdout)
    assert hits[0]["source"].endswith("libffi.md") and {"id", "text", "kind", "score"} <= set(hits[0])
    stats = json.loads(run_cli("kb", "stats", "--json", kb=tmp_path).stdout)
    assert stats["sources"] == 2
    forgot = json.loads(run_cli("kb", "forget", "--source", str(docs / "zstd.md"), "--json", kb=tmp_path).stdout)
    assert forgot["removed"] > 0
    assert_one_line_error(run_cli("kb", "add", str(tmp_path / "nope"), kb=tmp_path), "no such file or folder")


def readme_block(heading: str, doc: str = "README.md") -> str:
    """The first ```yaml block after `heading` in the README (or a page of docs/), exactly as printed."""
    text = (ROOT / doc).read_text()
    after = text[text.index(heading) :]
    start = after.index("```yaml\n") + len("```yaml\n")
    return after[start : after.index("```", start)]


def test_readme_ollama_pool_validates_as_printed(tmp_path: Path, run_cli) -> None:
    path = tmp_path / "experts.yaml"
    path.write_text(readme_block("## Ollama", "docs/serving.md"))
    proc = run_cli("validate", str(path))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"{path}: valid"
    assert "error" not in proc.stderr  # at most a note: no Ollama answers here, so names are not checked


def test_validate_lists_every_problem_one_line_each(tmp_path: Path, run_cli, model_a: Path) -> None:
    path = tmp_path / "experts.yaml"
    path.write_text(
        "memory_budget: 50MB\nexperts:\n"
        f"  - {{name: a, domain: general, backend: llamacpp, model: {model_a}, sytem_prompt: x, description: y}}\n"
        "  - {name: b, domain: general, backend: llamacpp, model: gone.gguf, system_prompt: x, description: y}\n"
    )
    proc = run_cli("validate", str(path), "--json")
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert all(line.startswith("ech0-moe: error: ") for line in lines) and "Traceback" not in proc.stderr
    text = "\n".join(lines)
    assert "sytem_prompt: unknown setting (did you mean 'system_prompt'?)" in text
    assert "(a).system_prompt: missing" in text and "(b).model: model file not found" in text
    assert "expert 'a' needs 171.8MB, more than memory_budget 50.0MB" in text
    out = json.loads(proc.stdout)
    assert out["valid"] is False and len(out["problems"]) == len(lines) == 4
    assert run_cli("validate").returncode == 0  # the shipped pool


def test_question_from_stdin_and_quiet_broken_pipe(tmp_path: Path, run_cli) -> None:
    proc = run_cli("route", "-", "--json", stdin="Balance the equation for burning propane.\n")
    assert proc.returncode == 0 and json.loads(proc.stdout)["expert"] == "chemistry", proc.stderr
    # the reader is gone long before the command writes (it starts in ~0.5 s): no BrokenPipe line
    cmd = f"{sys.executable} -m ech0_moe.cli experts | true"
    piped = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert piped.stderr == ""


def test_ask_streams_progress_and_tokens(tmp_path: Path, run_cli) -> None:
    proc = run_cli("ask", "Why is the sky blue?", "--mode", "fast", "--stream", "--max-tokens", "12", kb=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() and "[routed to physics" in proc.stderr and "loaded in" in proc.stderr
    assert "truncated=True" in proc.stderr


def test_the_server_examples_of_the_serving_doc_read_as_printed(tmp_path: Path) -> None:
    """Every experts.yaml of docs/serving.md's OpenAI-compatible section is read without a problem
    (vLLM, llama-server, LM Studio, llama-swap); no server is asked (the schema, the hosts, keys)."""
    from ech0_moe.config import check_config

    text = (ROOT / "docs" / "serving.md").read_text()
    section = text[text.index("## OpenAI-compatible servers") : text.index("## Ollama")]
    blocks = section.split("```yaml\n")[1:]
    assert len(blocks) == 4
    for i, block in enumerate(blocks):
        path = tmp_path / f"server{i}.yaml"
        path.write_text(block[: block.index("```")])
        config, problems = check_config(path)
        assert config is not None and not problems, problems
        assert {e.runtime for e in config.experts} == {"openai"} and config.placement == "local"


def test_experts_lists_each_experts_runtime(run_cli) -> None:
    proc = run_cli("experts")
    assert proc.returncode == 0, proc.stderr
    assert "  math         mathematics       llamacpp" in proc.stdout and "Traceback" not in proc.stderr
