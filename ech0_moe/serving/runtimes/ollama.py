"""Experts served by an Ollama server (the user's runtime).

- answer: langchain-ollama's `ChatOllama` (POST /api/chat, streamed);
- load: an empty /api/generate request with `keep_alive` (the model stays resident);
- unload: an empty /api/generate request with `keep_alive: 0`;
- what is resident: GET /api/ps (the pool reconciles with it: other clients may
  have loaded models, keep_alive may have expired ours);
- sizes: /api/ps after loading; before, the on-disk size from /api/tags.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any

import httpx

from ech0_moe.config import ExpertSpec
from ech0_moe.config import ollama_model_name as model_name
from ech0_moe.errors import BackendError
from ech0_moe.serving.records import Message, Reply
from ech0_moe.serving.runtimes.chat_models import Deadline, answer_watched, reply_of, within
from ech0_moe.serving.runtimes.http import CONNECT_S, http_failures, is_loopback


@dataclass
class OllamaHandle:
    host: str
    model: str
    load_seconds: float = 0.0
    last_load_duration: float = 0.0  # load time Ollama reported on the latest answer (0 = was resident)


class OllamaRuntime:
    """Talks to one or more Ollama hosts over HTTP."""

    name = "ollama"

    def __init__(self, keep_alive: str | None = None, timeout: float = float("inf")) -> None:
        self.keep_alive = keep_alive or os.environ.get("ECH0_OLLAMA_KEEP_ALIVE", "30m")
        self.timeout = timeout  # a cap on every expert's own `timeout` (validate uses a short one)
        self._clients: dict[str, httpx.Client] = {}

    def timeouts(self, spec: ExpertSpec, deadline: Deadline | None = None) -> httpx.Timeout:
        """Connect within 10 s; then no more than the expert's `timeout` without a byte (first
        byte, and between stream chunks) - and never past the answer's deadline."""
        idle = min(spec.timeout, self.timeout, deadline.remaining if deadline else float("inf"))
        return httpx.Timeout(idle, connect=min(10.0, idle))

    def _request(self, spec: ExpertSpec, method: str, path: str, payload: dict[str, Any] | None = None) -> Any:
        host = spec.host
        if host not in self._clients:  # HTTP(S)_PROXY applies to remote hosts only
            self._clients[host] = httpx.Client(base_url=host, trust_env=not is_loopback(host))
        client = self._clients[host]
        idle = min(spec.timeout, self.timeout)
        limit = idle + min(CONNECT_S, idle)
        with http_failures(f"Ollama at {host}", method, path, spec.timeout):
            try:  # the whole request by the clock: a host that trickles bytes resets httpx's read timeout
                response = within(
                    limit, lambda: client.request(method, path, json=payload, timeout=self.timeouts(spec)), client.close
                )
            except TimeoutError:
                self._clients.pop(host, None)  # closed to stop the request: the next one reconnects
                raise BackendError(
                    f"Ollama at {host} did not finish {method} {path} within {limit:g} s (timeout)", silent=True
                ) from None
        if response.status_code >= 400:
            try:
                detail = response.json().get("error", response.text)
            except ValueError:
                detail = response.text
            raise BackendError(
                f"Ollama at {host}: {method} {path} failed ({response.status_code}): {detail}",
                transient=response.status_code >= 500,
            )
        return response.json()

    def estimate_size(self, spec: ExpertSpec) -> int:
        wanted = model_name(spec.model)
        for m in self._request(spec, "GET", "/api/tags").get("models", []):
            if model_name(m.get("name") or m.get("model", "")) == wanted:
                return int(m.get("size", 0))
        raise BackendError(f"model {spec.model!r} is not on Ollama at {spec.host} (run: ollama pull {spec.model})")

    def models(self, spec: ExpertSpec) -> list[str]:
        """The models the host has pulled (`GET /api/tags`), by their canonical names."""
        return [
            model_name(m.get("name") or m.get("model", ""))
            for m in self._request(spec, "GET", "/api/tags").get("models", [])
        ]

    def resident(self, spec: ExpertSpec) -> dict[str, int]:
        models = self._request(spec, "GET", "/api/ps").get("models", [])
        return {model_name(m.get("name") or m.get("model", "")): int(m.get("size", 0)) for m in models}

    def score_letters(self, spec: ExpertSpec, handle: Any, messages: list[Message], letters: str) -> None:
        return None  # /api/chat gives no log-probabilities of a prompt's next token here: letters are read

    def adopt(self, spec: ExpertSpec) -> OllamaHandle:
        return OllamaHandle(spec.host, model_name(spec.model))

    def load(self, spec: ExpertSpec) -> tuple[OllamaHandle, int]:
        name = model_name(spec.model)
        t0 = time.perf_counter()
        self._request(spec, "POST", "/api/generate", {"model": name, "keep_alive": self.keep_alive})
        seconds = time.perf_counter() - t0
        size = self.resident(spec).get(name)
        if size is None:
            raise BackendError(f"Ollama at {spec.host} did not keep {name} loaded")
        return OllamaHandle(spec.host, name, load_seconds=seconds), size

    def unload(self, spec: ExpertSpec, handle: Any) -> None:
        self._request(spec, "POST", "/api/generate", {"model": model_name(spec.model), "keep_alive": 0})

    def chat(
        self, spec: ExpertSpec, handle: Any, messages: list[Message], max_tokens: int, deadline: Deadline | None
    ) -> Reply:
        from langchain_ollama import ChatOllama

        llm = ChatOllama(
            model=model_name(spec.model),
            base_url=spec.host,
            temperature=spec.temperature,
            repeat_penalty=spec.repeat_penalty,
            num_predict=max_tokens,
            num_ctx=spec.n_ctx,
            seed=0,
            keep_alive=self.keep_alive,
            # a host that stops sending (or never starts) ends the answer when the deadline does
            client_kwargs={"timeout": self.timeouts(spec, deadline), "trust_env": not is_loopback(spec.host)},
        )
        idle = min(spec.timeout, self.timeout)
        try:
            reply = answer_watched(llm, messages, deadline, idle, llm._client._client.close, f"Ollama at {spec.host}")
        except BackendError:
            raise
        except httpx.TimeoutException:
            if deadline:
                deadline.check()  # out of time: the answer's deadline, not the network, is the news
            raise BackendError(f"Ollama at {spec.host} sent nothing for {spec.timeout:g} s (timeout)") from None
        except (httpx.HTTPError, ConnectionError) as exc:
            raise BackendError(f"Ollama at {spec.host} is unreachable: {exc}", transient=True) from None
        except Exception as exc:  # ollama.ResponseError and friends: a crashed runner, an overloaded server
            raise BackendError(
                f"Ollama at {spec.host} failed to answer with {spec.model}: {exc}", transient=True
            ) from None
        if not reply.response_metadata.get("done"):  # the stream ended without Ollama's final record
            raise BackendError(f"Ollama at {spec.host}: the answer was cut off mid-stream", transient=True)
        if isinstance(handle, OllamaHandle):
            handle.last_load_duration = (reply.response_metadata.get("load_duration") or 0) / 1e9
        return reply_of(reply)
