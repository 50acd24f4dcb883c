"""A loopback server speaking Ollama's HTTP API, answering with real GGUF models via llama.cpp.

Ollama cannot be installed here, so the Ollama backend is tested against this: the endpoints
ECH0 MoE uses, with the shapes of Ollama's API docs:

- POST /api/chat       (streamed NDJSON by default, or one object with "stream": false;
                        empty "messages" loads, or unloads with keep_alive 0)
- POST /api/generate   (same; an empty "prompt" loads (done_reason "load") or, with
                        keep_alive 0, unloads (done_reason "unload"))
- GET  /api/ps         (resident models with size, expires_at, size_vram, context_length)
- POST /api/show       (details, model_info, template, capabilities)
- GET  /api/tags       (available models with on-disk size)
- GET  /api/version, GET /

keep_alive: default 5m; a number is seconds, a string a duration ("30s", "10m", "1h"); 0 unloads
after the request; a negative value keeps it forever. A background sweep unloads expired models.

Limits (see README): no GPU (size_vram is 0, size is the file size, not memory in use);
/api/generate applies the model's chat template rather than a Modelfile TEMPLATE; only the options
num_predict, temperature, seed and num_ctx are honoured; no images, tools, "format", "raw" or
"context"; digests are synthetic; it does not evict models for memory of its own (real Ollama
may). `crash_next` injects the error line a crashed runner sends mid-stream, and unloads the
model; `cut_next` ends a stream after three tokens without its final `done` record.

Run: python tests/integration/fake_ollama.py --port 11435 --model smollm2:135m=/path/model.gguf
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import hashlib
import json
import os
import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from ech0_moe.config import ollama_model_name

DEFAULT_KEEP_ALIVE = 300.0
_DURATION = re.compile(r"^(-?\d+(?:\.\d+)?)(ms|s|m|h)?$")


def parse_keep_alive(value: Any) -> float:
    """Seconds to stay resident after a request (inf = forever, 0 = unload now)."""
    if value is None or value == "":
        return DEFAULT_KEEP_ALIVE
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        m = _DURATION.match(str(value).strip())
        if not m:
            raise ValueError(f"invalid keep_alive {value!r}")
        seconds = float(m.group(1)) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600, None: 1}[m.group(2)]
    return float("inf") if seconds < 0 else seconds


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat().replace("+00:00", "Z")


@dataclass
class Resident:
    llm: Any
    expires_at: float
    n_ctx: int
    lock: threading.Lock = field(default_factory=threading.Lock)


class FakeOllama:
    """Model registry + residency with keep_alive, shared by the request handlers."""

    def __init__(self, models: dict[str, Path], n_ctx: int = 2048) -> None:
        self.models = {self.canonical(k): Path(v) for k, v in models.items()}
        self.n_ctx = n_ctx
        self.resident: dict[str, Resident] = {}
        self.lock = threading.RLock()
        self.loads = 0
        self.crash_next = 0  # fault injection: the next N answers die mid-stream, as a crashed runner does
        self.cut_next = 0  # fault injection: the next N streams stop after a few tokens, no final record

    def take_fault(self, name: str) -> bool:
        with self.lock:
            if getattr(self, name) > 0:
                setattr(self, name, getattr(self, name) - 1)
                return True
            return False

    @staticmethod
    def canonical(name: str) -> str:
        return ollama_model_name(name)

    def details(self, name: str) -> dict[str, Any]:
        return {
            "parent_model": "",
            "format": "gguf",
            "family": "llama",
            "families": ["llama"],
            "parameter_size": "135M",
            "quantization_level": "Q4_1",
        }

    def digest(self, name: str) -> str:
        path = self.models[name]
        return hashlib.sha256(f"{path}:{path.stat().st_size}".encode()).hexdigest()

    def ensure(self, name: str) -> tuple[Resident, float]:
        """Load `name` if needed; returns (resident, seconds spent loading)."""
        from llama_cpp import Llama

        with self.lock:
            self.sweep()
            if name in self.resident:
                return self.resident[name], 0.0
            t0 = time.perf_counter()
            llm = Llama(model_path=str(self.models[name]), n_ctx=self.n_ctx, verbose=False)
            self.resident[name] = Resident(llm, time.time() + DEFAULT_KEEP_ALIVE, self.n_ctx)
            self.loads += 1
            return self.resident[name], time.perf_counter() - t0

    def keep(self, name: str, keep_alive: float) -> None:
        with self.lock:
            if name not in self.resident:
                return
            if keep_alive == 0:
                self.resident.pop(name).llm.close()
            else:
                self.resident[name].expires_at = time.time() + keep_alive

    def sweep(self) -> None:
        with self.lock:
            for name in [n for n, r in self.resident.items() if r.expires_at <= time.time()]:
                resident = self.resident.pop(name)
                with resident.lock:
                    resident.llm.close()


class Handler(BaseHTTPRequestHandler):
    server_version = "ech0-fake-ollama/0.1"
    state: FakeOllama

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    # -- plumbing ----------------------------------------------------------
    def _json(self, status: int, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _body(self) -> dict[str, Any]:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b"{}"
        return json.loads(raw or b"{}")

    def _model(self, body: dict[str, Any]) -> str | None:
        name = self.state.canonical(str(body.get("model") or body.get("name") or ""))
        if name not in self.state.models:
            self._json(404, {"error": f"model '{name}' not found"})
            return None
        return name

    # -- routes ------------------------------------------------------------
    def do_GET(self) -> None:
        s = self.state  # expired models stay listed until the sweeper unloads them, as in Ollama
        if self.path in ("/", ""):
            body = b"Ollama is running"
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        elif self.path == "/api/version":
            self._json(200, {"version": "0.0.0-ech0-fake"})
        elif self.path == "/api/tags":
            models = [
                {
                    "name": n,
                    "model": n,
                    "modified_at": _now(),
                    "size": p.stat().st_size,
                    "digest": s.digest(n),
                    "details": s.details(n),
                }
                for n, p in sorted(s.models.items())
            ]
            self._json(200, {"models": models})
        elif self.path == "/api/ps":
            with s.lock:
                models = [
                    {
                        "name": n,
                        "model": n,
                        "size": s.models[n].stat().st_size,
                        "digest": s.digest(n),
                        "details": s.details(n),
                        "expires_at": (
                            "2318-08-30T00:00:00Z"
                            if r.expires_at == float("inf")
                            else dt.datetime.fromtimestamp(r.expires_at, dt.UTC).isoformat().replace("+00:00", "Z")
                        ),
                        "size_vram": 0,
                        "context_length": r.n_ctx,
                    }
                    for n, r in sorted(s.resident.items())
                ]
            self._json(200, {"models": models})
        else:
            self._json(404, {"error": "not found"})

    def do_POST(self) -> None:
        try:
            body = self._body()
        except json.JSONDecodeError:
            self._json(400, {"error": "invalid JSON body"})
            return
        if self.path == "/api/show":
            name = self._model(body)
            if name:
                self._json(
                    200,
                    {
                        "modelfile": f"FROM {self.state.models[name]}",
                        "parameters": "",
                        "template": "{{ .Prompt }}",
                        "details": self.state.details(name),
                        "model_info": {"general.architecture": "llama", "general.parameter_count": 134515008},
                        "capabilities": ["completion"],
                        "modified_at": _now(),
                    },
                )
        elif self.path in ("/api/chat", "/api/generate"):
            self._generate(body, chat=self.path == "/api/chat")
        else:
            self._json(404, {"error": "not found"})

    def _generate(self, body: dict[str, Any], chat: bool) -> None:
        name = self._model(body)
        if name is None:
            return
        try:
            keep_alive = parse_keep_alive(body.get("keep_alive"))
        except ValueError as exc:
            self._json(400, {"error": str(exc)})
            return
        if chat:
            messages = body.get("messages") or []
        else:
            messages = [{"role": "system", "content": body["system"]}] if body.get("system") else []
            if body.get("prompt"):
                messages.append({"role": "user", "content": body["prompt"]})
        base = {"model": name, "created_at": _now()}
        empty = {"message": {"role": "assistant", "content": ""}} if chat else {"response": ""}
        if not any(m.get("role") == "user" for m in messages):  # load or unload only
            if keep_alive == 0:
                self.state.keep(name, 0)
                self._json(200, {**base, **empty, "done": True, "done_reason": "unload"})
            else:
                self.state.ensure(name)
                self.state.keep(name, keep_alive)
                self._json(200, {**base, **empty, "done": True, "done_reason": "load"})
            return
        t_start = time.perf_counter()
        resident, load_seconds = self.state.ensure(name)
        options = body.get("options") or {}
        params = {
            "max_tokens": int(options.get("num_predict", 128)),
            "temperature": float(options.get("temperature", 0.8)),
            "seed": int(options.get("seed", 0)),
        }
        stream = body.get("stream", True)
        chunks: list[str] = []
        finish = "stop"
        crash = self.state.take_fault("crash_next")
        cut = stream and self.state.take_fault("cut_next")
        with resident.lock:
            if stream:
                self.send_response(200)
                self.send_header("Content-Type", "application/x-ndjson")
                self.end_headers()
            t_eval = time.perf_counter()
            resident.llm.reset()  # fresh evaluation: same prompt, same greedy answer
            for part in resident.llm.create_chat_completion(messages=messages, stream=True, **params):
                choice = part["choices"][0]
                piece = choice.get("delta", {}).get("content") or ""
                finish = choice.get("finish_reason") or finish
                if piece and crash:  # what Ollama sends when its runner dies mid-answer
                    error = {"error": "llama runner process has terminated: signal: killed"}
                    self._line(error) if stream else self._json(500, error)
                    self.state.keep(name, 0)
                    return
                if cut and len(chunks) == 3:  # the connection drops: no `done` record ever comes
                    self.close_connection = True
                    return
                if piece:
                    chunks.append(piece)
                    if stream:
                        content = {"message": {"role": "assistant", "content": piece}} if chat else {"response": piece}
                        self._line({**base, "created_at": _now(), **content, "done": False})
            eval_ns = int((time.perf_counter() - t_eval) * 1e9)
        self.state.keep(name, keep_alive)
        final = {
            **base,
            "created_at": _now(),
            "done": True,
            "done_reason": "length" if finish == "length" else "stop",
            "total_duration": int((time.perf_counter() - t_start) * 1e9),
            "load_duration": int(load_seconds * 1e9),
            "prompt_eval_count": len(resident.llm.tokenize(json.dumps(messages).encode())),
            "prompt_eval_duration": 0,
            "eval_count": len(chunks),
            "eval_duration": eval_ns,
        }
        text = "".join(chunks)
        if stream:
            self._line({**final, **empty})
        else:
            result = {"message": {"role": "assistant", "content": text}} if chat else {"response": text}
            self._json(200, {**final, **result})

    def _line(self, obj: dict[str, Any]) -> None:
        self.wfile.write(json.dumps(obj).encode() + b"\n")
        self.wfile.flush()


class FakeOllamaServer:
    """Start/stop the fake in a background thread: ``with FakeOllamaServer(models) as url: ...``."""

    def __init__(self, models: dict[str, Path], host: str = "127.0.0.1", port: int = 0) -> None:
        self.state = FakeOllama(models)
        handler = type("BoundHandler", (Handler,), {"state": self.state, "protocol_version": "HTTP/1.0"})
        self.httpd = ThreadingHTTPServer((host, port), handler)
        self.httpd.daemon_threads = True
        self.url = f"http://{host}:{self.httpd.server_address[1]}"
        self._threads: list[threading.Thread] = []
        self._stop = threading.Event()
        self.pause_sweeper = threading.Event()  # tests: hold expired models until a request arrives

    def start(self) -> str:
        serve = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        sweep = threading.Thread(target=self._sweep, daemon=True)
        self._threads = [serve, sweep]
        for t in self._threads:
            t.start()
        return self.url

    def _sweep(self) -> None:
        while not self._stop.wait(0.25):
            if not self.pause_sweeper.is_set():
                self.state.sweep()

    def stop(self) -> None:
        self._stop.set()
        self.httpd.shutdown()
        self.httpd.server_close()
        with self.state.lock:
            for r in self.state.resident.values():
                r.llm.close()
            self.state.resident.clear()

    def __enter__(self) -> str:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description="Loopback server speaking Ollama's API with llama.cpp models.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=11435)
    parser.add_argument("--model", action="append", default=[], help="NAME=PATH.gguf (repeatable)")
    args = parser.parse_args()
    models = {}
    for name, _, path in (item.partition("=") for item in args.model):
        if not path or not os.path.isfile(path):
            parser.error(f"--model {name}={path}: expected NAME=PATH to an existing GGUF file")
        models[name] = Path(path)
    if not models:
        from ech0_moe.setup_models import packaged_smollm2, second_copy

        models = {"smollm2:135m": packaged_smollm2(), "smollm2-b:135m": second_copy()}
    server = FakeOllamaServer(models, args.host, args.port)
    print(f"fake Ollama on {server.start()} serving {', '.join(server.state.models)}", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        threading.Event().wait()
    server.stop()


if __name__ == "__main__":
    main()
