"""The Ollama backend against a loopback server speaking Ollama's HTTP API with the real SmolLM2
(ech0_moe.fake_ollama), and against a real Ollama when OLLAMA_HOST answers."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import httpx
import pytest

from ech0_moe.config import load_config
from ech0_moe.errors import BackendError, BudgetError
from ech0_moe.graph import Context, build_graph
from ech0_moe.serving.local.pool import ExpertPool
from tests.integration.fake_ollama import FakeOllamaServer, parse_keep_alive


@pytest.fixture
def fake(model_a: Path, model_b: Path):
    server = FakeOllamaServer({"smollm2:135m": model_a, "smollm2-b:135m": model_b, "other:1b": model_a})
    yield server.start()
    server.stop()


def test_protocol_endpoints(fake: str, ollama_ps) -> None:
    tags = httpx.get(f"{fake}/api/tags").json()["models"]
    assert {t["name"] for t in tags} == {"smollm2:135m", "smollm2-b:135m", "other:1b"}
    assert all(t["size"] > 90_000_000 and t["details"]["format"] == "gguf" for t in tags)
    loaded = httpx.post(f"{fake}/api/generate", json={"model": "smollm2:135m"}).json()
    assert loaded["done"] and loaded["done_reason"] == "load" and ollama_ps(fake) == ["smollm2:135m"]
    with httpx.stream(
        "POST",
        f"{fake}/api/chat",
        json={"model": "smollm2:135m", "messages": [{"role": "user", "content": "Hi"}], "options": {"num_predict": 4}},
    ) as response:
        lines = [json.loads(line) for line in response.iter_lines() if line]
    assert len(lines) >= 2 and not lines[0]["done"] and lines[-1]["done"] and lines[-1]["eval_count"] >= 1
    assert lines[-1]["load_duration"] == 0  # already resident
    gen = httpx.post(
        f"{fake}/api/generate",
        json={"model": "smollm2:135m", "prompt": "Hi", "stream": False, "options": {"num_predict": 3}},
    ).json()
    assert gen["done"] and isinstance(gen["response"], str)
    show = httpx.post(f"{fake}/api/show", json={"model": "smollm2:135m"}).json()
    assert show["details"]["quantization_level"] == "Q4_1" and "model_info" in show
    assert httpx.post(f"{fake}/api/show", json={"model": "nope"}).status_code == 404
    unloaded = httpx.post(f"{fake}/api/generate", json={"model": "smollm2:135m", "keep_alive": 0}).json()
    assert unloaded["done_reason"] == "unload" and ollama_ps(fake) == []
    assert parse_keep_alive("10m") == 600 and parse_keep_alive(-1) == float("inf") and parse_keep_alive(0) == 0


def test_graph_answers_through_chatollama_and_swaps_via_the_api(
    write_config, fake: str, tmp_path: Path, ollama_config, ollama_ps, registry
) -> None:
    ctx = Context(experts_file=str(ollama_config([fake])), kb_dir=str(tmp_path / "kb"), max_tokens=8)
    graph = build_graph(services=registry)
    first = graph.invoke({"query": "What is 2 + 2?", "mode": "basic", "expert": "a"}, context=ctx)
    assert first["solution"] and first["swapped"] and ollama_ps(fake) == ["smollm2:135m"]
    second = graph.invoke({"query": "Say hello.", "mode": "optimized", "expert": "b"}, context=ctx)
    assert second["swapped"] and second["expert_used"] == "b"
    assert ollama_ps(fake) == ["smollm2-b:135m"]  # a was unloaded with keep_alive 0 before b loaded
    stats = registry.for_run(ctx.experts_file, ctx.kb_dir).pool.stats()
    assert stats["within_budget"] and stats["swaps"] == 2
    # ChatOllama streams the answer as Ollama sends it (NDJSON lines), token by token
    chunks = [
        chunk.content
        for chunk, meta in graph.stream(
            {"query": "Why is the sky blue?", "mode": "basic", "expert": "b"}, context=ctx, stream_mode="messages"
        )
        if meta["langgraph_node"] == "answer"
    ]
    assert len([c for c in chunks if c]) >= 3
    done = graph.invoke({"query": "Why is the sky blue?", "mode": "basic", "expert": "b"}, context=ctx)
    assert done["truncated"] is True and done["tokens"]["completion"] == 8 and done["tokens"]["prompt"] > 5


def test_multiple_choice_reads_the_letter_ollama_answers_with(
    fake: str, tmp_path: Path, ollama_config, registry
) -> None:
    ctx = Context(experts_file=str(ollama_config([fake])), kb_dir=str(tmp_path / "kb"))
    out = build_graph(services=registry).invoke(
        {"query": "What is 2 + 2?", "choices": ["3", "4", "5"], "mode": "basic", "expert": "a"}, context=ctx
    )
    assert out["choice_method"] == "letter" and out["choice_scores"] == [] and out["error"] == ""
    assert out["choice"] in (-1, 0, 1, 2) and out["tokens"]["completion"] <= 8  # a short answer, then read


def test_reconciles_with_other_clients(write_config, fake: str, ollama_config) -> None:
    pool = ExpertPool(load_config(ollama_config([fake])))
    # another client loaded our model b: adopted, no swap needed
    httpx.post(f"{fake}/api/generate", json={"model": "smollm2-b:135m", "keep_alive": -1})
    assert not pool.ensure_loaded("b").swapped
    # it unloaded b behind our back: forgotten, and loading it again is a real swap
    httpx.post(f"{fake}/api/generate", json={"model": "smollm2-b:135m", "keep_alive": 0})
    assert pool.ensure_loaded("b").swapped
    pool.unload_all()
    # a model we do not manage fills the host's budget: one clear error, nothing counted as ours
    httpx.post(f"{fake}/api/generate", json={"model": "other:1b", "keep_alive": -1})
    with pytest.raises(BudgetError, match="other clients hold other:1b"):
        pool.ensure_loaded("a")
    assert pool.loaded_experts() == []


def test_keep_alive_expiry_is_noticed(
    write_config, fake: str, monkeypatch: pytest.MonkeyPatch, ollama_config, ollama_ps
) -> None:
    monkeypatch.setenv("ECH0_OLLAMA_KEEP_ALIVE", "1s")
    pool = ExpertPool(load_config(ollama_config([fake])))
    assert pool.ensure_loaded("a").swapped
    deadline = time.time() + 10
    while ollama_ps(fake) and time.time() < deadline:
        time.sleep(0.2)
    assert ollama_ps(fake) == []
    assert pool.ensure_loaded("a").swapped  # expired on the host: loaded again, not assumed resident


def test_each_host_keeps_its_own_expert_awake(
    write_config, model_a: Path, model_b: Path, ollama_config, ollama_ps
) -> None:
    with FakeOllamaServer({"smollm2:135m": model_a}) as one, FakeOllamaServer({"smollm2-b:135m": model_b}) as two:
        pool = ExpertPool(load_config(ollama_config([one, two])))
        for name in ("a", "b", "a", "b"):
            pool.chat(name, [{"role": "user", "content": "Hi"}], max_tokens=2)
        assert pool.swaps == 2 and set(pool.loaded_experts()) == {"a", "b"}
        assert ollama_ps(one) == ["smollm2:135m"] and ollama_ps(two) == ["smollm2-b:135m"]
        assert all(d["peak_loaded_bytes"] <= d["budget_bytes"] for d in pool.stats()["devices"].values())


def test_unreachable_host_is_one_clear_error(
    write_config, tmp_path: Path, run_cli, assert_one_line_error, ollama_config
) -> None:
    config = ollama_config(["http://127.0.0.1:9"])
    with pytest.raises(BackendError, match=r"Ollama at http://127.0.0.1:9 is unreachable"):
        ExpertPool(load_config(config)).ensure_loaded("a")
    proc = run_cli("ask", "What is 2 + 2?", "--mode", "basic", "--experts", str(config), kb=tmp_path / "kb")
    assert_one_line_error(proc, "Ollama at http://127.0.0.1:9 is unreachable")


def _real_ollama() -> str | None:
    host = os.environ.get("OLLAMA_HOST")
    if not host:
        return None
    url = host if host.startswith("http") else f"http://{host}"
    try:
        httpx.get(f"{url}/api/version", timeout=2).raise_for_status()
    except httpx.HTTPError:
        return None
    return url


@pytest.mark.skipif(_real_ollama() is None, reason="no Ollama answering at OLLAMA_HOST")
def test_real_ollama(write_config, ollama_ps) -> None:
    url = _real_ollama()
    models = httpx.get(f"{url}/api/tags").json()["models"]
    if not models:
        pytest.skip("the real Ollama has no models pulled")
    name = min(models, key=lambda m: m["size"])["name"]
    body = "memory_budget: 64GB\nexperts:\n"
    body += f'  - {{name: g, domain: general, backend: ollama, host: "{url}", model: "{name}", '
    body += "system_prompt: Be brief., description: x}\n"
    pool = ExpertPool(load_config(write_config(body)))
    text, _ = pool.chat("g", [{"role": "user", "content": "Say OK."}], max_tokens=8)
    assert text and name in ollama_ps(url)
    pool.unload_all()


def test_reload_behind_our_back_counts_as_a_swap(write_config, model_a: Path, model_b: Path, ollama_config) -> None:
    server = FakeOllamaServer({"smollm2:135m": model_a, "smollm2-b:135m": model_b})
    url = server.start()
    try:
        pool = ExpertPool(load_config(ollama_config([url])))
        pool.ensure_loaded("a")
        server.pause_sweeper.set()
        server.state.resident["smollm2:135m"].expires_at = 0  # expires between /api/ps and the answer
        before = pool.swaps
        _, acquired = pool.chat("a", [{"role": "user", "content": "Hi"}], max_tokens=2)
        assert acquired.swapped and acquired.load_seconds > 0 and pool.swaps == before + 1
    finally:
        server.stop()


def test_experts_command_shows_what_the_host_holds(write_config, fake: str, run_cli, ollama_config) -> None:
    config = ollama_config([fake])
    httpx.post(f"{fake}/api/generate", json={"model": "smollm2:135m", "keep_alive": -1})
    listing = json.loads(run_cli("experts", "--json", "--experts", str(config)).stdout)
    assert {e["name"]: e["loaded"] for e in listing["experts"]} == {"a": True, "b": False}


@pytest.fixture
def hung_host():
    """A host that accepts connections and never answers (the stand-in for a wedged Ollama)."""
    import socket
    import threading

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}"
    stop.set()
    thread.join()
    for conn in held:
        conn.close()
    server.close()


def test_a_hung_host_ends_with_one_line_and_never_blocks_local_experts(
    write_config, hung_host: str, model_a: Path, expert_yaml
) -> None:
    import threading

    body = "memory_budget: 200MB\nexperts:\n" + expert_yaml("local", "general", model_a)
    body += f'  - {{name: remote, domain: mathematics, backend: ollama, model: "m:1b", host: "{hung_host}", '
    body += "size: 1GB, timeout: 10, system_prompt: x, description: y}\n"
    body = body.replace("memory_budget: 200MB\n", f"memory_budget: 200MB\nhosts: {{{hung_host}: 2GB}}\n")
    pool = ExpertPool(load_config(write_config(body)))
    failure: list[BaseException] = []

    def ask_remote() -> None:
        try:
            pool.chat("remote", [{"role": "user", "content": "hi"}], 4)
        except BaseException as exc:
            failure.append(exc)

    t0 = time.perf_counter()
    remote = threading.Thread(target=ask_remote)
    remote.start()
    time.sleep(0.3)  # the remote request is now hanging on the host
    reply, _ = pool.chat("local", [{"role": "user", "content": "Say hi."}], 4)
    local_seconds = time.perf_counter() - t0
    remote.join(timeout=30)
    assert reply.text and local_seconds < 8  # not behind the hung host (its timeout is 10 s)
    assert not remote.is_alive() and time.perf_counter() - t0 < 20
    assert isinstance(failure[0], BackendError) and "did not answer" in str(failure[0]) and "10 s" in str(failure[0])
