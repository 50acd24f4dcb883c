"""A host that sends one byte at a time is timed out by the clock (a loopback server of the test's own)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest

from ech0_moe.config import ExpertSpec
from ech0_moe.errors import BackendError
from ech0_moe.serving.runtimes.chat_models import Deadline
from ech0_moe.serving.runtimes.ollama import OllamaRuntime


def _trickler(headers_first: bool, stop: threading.Event) -> tuple[socket.socket, threading.Thread]:
    """A loopback server that answers every request one byte every 0.5 s, forever (until `stop`)."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.5)
    line = b'{"model":"m","message":{"role":"assistant","content":"hello there"},"done":false}\n'
    body = b"%x\r\n%s\r\n" % (len(line) * 100, line * 100)  # one chunk, sent a byte at a time

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            conn.recv(65536)
            head = b"HTTP/1.1 200 OK\r\nContent-Type: application/x-ndjson\r\nTransfer-Encoding: chunked\r\n\r\n"
            if headers_first:
                conn.sendall(head)
                payload = body
            else:
                payload = head + body
            for byte in payload:
                if stop.wait(0.5):
                    break
                try:
                    conn.sendall(bytes([byte]))
                except OSError:
                    break
            conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return server, thread


@pytest.fixture
def trickler() -> Iterator[callable]:
    stop = threading.Event()
    servers: list[socket.socket] = []

    def start(headers_first: bool) -> str:
        server, _ = _trickler(headers_first, stop)
        servers.append(server)
        return f"http://127.0.0.1:{server.getsockname()[1]}"

    yield start
    stop.set()
    for server in servers:
        server.close()


def _spec(host: str, timeout: float) -> ExpertSpec:
    return ExpertSpec("x", "general", "ollama", "m:latest", "Be brief.", "x", host=host, timeout=timeout)


def test_a_trickled_api_ps_fails_within_its_timeout(trickler) -> None:
    spec = _spec(trickler(headers_first=False), timeout=2.0)
    t0 = time.monotonic()
    with pytest.raises(BackendError, match=r"did not finish GET /api/ps within 4 s"):
        OllamaRuntime().resident(spec)
    assert time.monotonic() - t0 < 2.0 + 2.0 + 3.0


def test_a_trickled_answer_ends_at_the_answer_deadline(trickler) -> None:
    spec = _spec(trickler(headers_first=True), timeout=60.0)  # bytes keep coming: the idle timeout never fires
    t0 = time.monotonic()
    with pytest.raises(BackendError, match="answer_timeout"):
        OllamaRuntime().chat(spec, None, [{"role": "user", "content": "hi"}], 16, Deadline(3.0))
    assert time.monotonic() - t0 < 3.0 + 1.0 + 3.0


def test_a_trickled_answer_with_no_new_token_ends_at_the_experts_timeout(trickler) -> None:
    """Bytes keep coming, a whole token never does: the expert's `timeout`, not answer_timeout, ends it."""
    host = trickler(headers_first=True)
    t0 = time.monotonic()
    with pytest.raises(BackendError, match=rf"Ollama at {host} sent no new token for 2 s \(timeout\)"):
        OllamaRuntime().chat(_spec(host, timeout=2.0), None, [{"role": "user", "content": "hi"}], 16, Deadline(600))
    assert time.monotonic() - t0 < 2.0 + 3.0


def test_validate_calls_a_hung_host_a_note(trickler, write_config, run_cli) -> None:
    host = trickler(headers_first=False)
    body = (
        "memory_budget: 1GB\nexperts:\n"
        f'  - {{name: x, domain: general, backend: ollama, model: "m:1", host: "{host}", size: 1GB,'
        " system_prompt: s, description: d}\n"
    )
    proc = run_cli("validate", str(write_config(body)), timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert f"note: {host} did not answer: its model names were not checked" in proc.stderr
