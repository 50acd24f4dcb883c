"""`runtime: openai` against a real OpenAI-compatible server: llama-cpp-python's own
(`python -m llama_cpp.server`) on loopback, serving the demo's two GGUF files and loading one
at a time on request, as llama-swap and LM Studio do. Routed answers, streamed tokens, the swaps
the server made, `validate` listing its models, and a killed server giving one line."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from ech0_moe.graph import Context, build_graph
from ech0_moe.services import ServiceRegistry
from tests.integration.conftest import free_port, start_process

LOADED = "llama_model_loader: loaded meta data"  # llama.cpp prints this once per model load


class Server:
    def __init__(self, proc: subprocess.Popen, url: str, log: Path) -> None:
        self.proc, self.url, self.log = proc, url, log

    def loads(self) -> int:
        return self.log.read_text(errors="replace").count(LOADED)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, model_a: Path, model_b: Path) -> Iterator[Server]:
    folder = tmp_path_factory.mktemp("openai-server")
    port = free_port()
    models = [
        {"model": str(model_a), "model_alias": "smollm-a", "n_ctx": 2048, "n_threads": 2, "verbose": True},
        {"model": str(model_b), "model_alias": "smollm-b", "n_ctx": 2048, "n_threads": 2, "verbose": True},
    ]
    (folder / "server.json").write_text(json.dumps({"host": "127.0.0.1", "port": port, "models": models}))
    log, url = folder / "server.log", f"http://127.0.0.1:{port}/v1"
    argv = [sys.executable, "-m", "llama_cpp.server", "--config_file", str(folder / "server.json")]
    srv = Server(start_process(argv, log, f"{url}/models", "llama_cpp.server"), url, log)
    yield srv
    srv.stop()


def pool_yaml(folder: Path, url: str, extra: str = "") -> Path:
    """Two experts on the server's two models; `hosts:` says the server holds one model at a time."""
    body = f"""memory_budget: 1GB
hosts: {{"{url}": 200MB}}
defaults: {{runtime: openai, host: "{url}", size: 172MB, max_tokens: 24}}
experts:
  - {{name: math, domain: mathematics, model: smollm-a, system_prompt: You are a mathematician.,
     description: "Mathematics: arithmetic, algebra, calculus, equations."}}
  - {{name: general, domain: general, model: smollm-b, system_prompt: You are helpful.,
     description: "General knowledge: health, history, everyday questions."}}
{extra}"""
    path = folder / "openai-pool.yaml"
    path.write_text(body)
    return path


def test_validate_lists_the_servers_models(server: Server, tmp_path: Path, run_cli) -> None:
    extra = "  - {name: missing, domain: physics, model: nope, system_prompt: x, description: Physics.}\n"
    proc = run_cli("validate", str(pool_yaml(tmp_path, server.url, extra)), timeout=120)
    assert proc.returncode == 1, proc.stderr
    assert f"{server.url} offers: smollm-a, smollm-b" in proc.stderr
    assert f"expert 'missing': model 'nope' is not on {server.url} (it offers: smollm-a, smollm-b)" in proc.stderr


def test_routed_answers_stream_and_the_server_swaps(server: Server, tmp_path: Path) -> None:
    ctx = Context(experts_file=str(pool_yaml(tmp_path, server.url)), kb_dir=str(tmp_path / "kb"), max_tokens=24)
    registry = ServiceRegistry()
    graph = build_graph(services=registry)
    before = server.loads()
    first = graph.invoke({"query": "What is 12 times 12?", "mode": "basic"}, context=ctx)
    assert first["expert_used"] == "math" and first["solution"] and not first["error"], first
    assert first["served_by"] == server.url and first["swapped"]
    tokens = []
    for _, data in graph.stream(
        {"query": "How do vaccines train the immune system?", "mode": "basic"}, context=ctx, stream_mode=["messages"]
    ):
        chunk, meta = data
        if meta.get("langgraph_node") == "answer" and chunk.content:
            tokens.append(chunk.content)
    assert len(tokens) >= 3  # streamed as the server generated them
    pool = registry.for_run(ctx.experts_file, ctx.kb_dir).pool
    assert pool.swaps == 2 and pool.loaded_experts() == ["general"]  # one model at a time, as the server holds
    # the server loaded smollm-b when the pool swapped to it (smollm-a it loaded when it started)
    assert server.loads() - before == 1 and server.loads() == 2


def test_a_killed_server_is_one_line(server: Server, tmp_path: Path) -> None:
    ctx = Context(experts_file=str(pool_yaml(tmp_path, server.url)), kb_dir=str(tmp_path / "kb"), max_tokens=8)
    server.stop()  # killed: its port no longer answers
    result = build_graph(services=ServiceRegistry()).invoke({"query": "What is 2+2?", "mode": "basic"}, context=ctx)
    assert result["solution"] == "" and f"the server at {server.url} is unreachable" in result["error"], result
    assert "\n" not in result["error"] and "Traceback" not in result["error"]
