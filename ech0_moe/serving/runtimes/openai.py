"""`runtime: openai`: an expert behind any OpenAI-compatible server (vLLM, SGLang, llama.cpp's
`llama-server`, llama-cpp-python's server, LM Studio, llama-swap, LocalAI, TGI), answered through
langchain-openai's `ChatOpenAI`, so tokens stream and custom events flow as with the other runtimes.

- `host:` is the server's base URL (`http://127.0.0.1:8000/v1`); `model:` the name the server
  gives the model (`GET /v1/models`); `api_key_env:` names the environment variable holding the
  key (the key itself is never in experts.yaml; none: the server needs none).
- The server decides what is resident. `load` asks for one token, so a server that loads models
  on demand (llama-swap, LM Studio, llama-cpp-python's server with several models) loads it then,
  while retrieval runs; `unload` asks nothing. Memory is the YAML's `size:`, and `hosts: {URL:
  budget}` tells the pool what the server holds at once: one model's size for a server that swaps
  (requests are then grouped by model, as in the embedded pool), more for one that holds several.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import httpx

from ech0_moe.config import ExpertSpec
from ech0_moe.errors import BackendError
from ech0_moe.serving.records import Message, Reply
from ech0_moe.serving.runtimes.chat_models import Deadline, answer_watched, reply_of
from ech0_moe.serving.runtimes.http import CONNECT_S, http_failures, is_loopback


@dataclass
class OpenAIHandle:
    host: str
    model: str


class OpenAIRuntime:
    """Talks to OpenAI-compatible servers over HTTP."""

    name = "openai"

    def __init__(self, timeout: float = float("inf")) -> None:
        self.timeout = timeout  # a cap on every expert's own `timeout` (validate uses a short one)

    @staticmethod
    def _key(spec: ExpertSpec) -> str:
        if not spec.api_key_env:
            return "none"  # the client needs some key; a server without auth ignores it
        key = os.environ.get(spec.api_key_env, "")
        if not key:
            raise BackendError(
                f"expert {spec.name!r}: the environment variable {spec.api_key_env} (api_key_env) is not set"
            )
        return key

    @staticmethod
    def _client(spec: ExpertSpec, idle: float) -> httpx.Client:
        """HTTP(S)_PROXY applies to remote servers only; `idle`: the longest wait for a byte."""
        return httpx.Client(
            timeout=httpx.Timeout(idle, connect=min(CONNECT_S, idle)), trust_env=not is_loopback(spec.host)
        )

    def _get(self, spec: ExpertSpec, path: str) -> Any:
        idle = min(spec.timeout, self.timeout)
        with http_failures(f"the server at {spec.host}", "GET", path, idle), self._client(spec, idle) as client:
            response = client.get(spec.host.rstrip("/") + path, headers={"Authorization": f"Bearer {self._key(spec)}"})
        if response.status_code >= 400:
            raise BackendError(f"the server at {spec.host}: GET {path} failed ({response.status_code})")
        return response.json()

    def models(self, spec: ExpertSpec) -> list[str]:
        """The model names the server offers (`GET /models`)."""
        return [str(m.get("id", "")) for m in self._get(spec, "/models").get("data", [])]

    def estimate_size(self, spec: ExpertSpec) -> int:
        return spec.size_bytes

    def resident(self, spec: ExpertSpec) -> None:
        return None  # the OpenAI API does not say what is loaded: only this process knows

    def adopt(self, spec: ExpertSpec) -> OpenAIHandle:
        return OpenAIHandle(spec.host, spec.model)

    def load(self, spec: ExpertSpec) -> tuple[OpenAIHandle, int]:
        handle = self.adopt(spec)
        self.chat(spec, handle, [{"role": "user", "content": "Say OK."}], 1, None)  # a swapping server loads it now
        return handle, spec.size_bytes

    def unload(self, spec: ExpertSpec, handle: Any) -> None:
        return None  # the server evicts by itself when it swaps

    def score_letters(self, spec: ExpertSpec, handle: Any, messages: list[Message], letters: str) -> None:
        return None  # no prompt log-probabilities through the chat API: letters are read

    def chat(
        self, spec: ExpertSpec, handle: Any, messages: list[Message], max_tokens: int, deadline: Deadline | None
    ) -> Reply:
        from langchain_openai import ChatOpenAI

        idle = min(spec.timeout, self.timeout)
        client = self._client(spec, idle)
        llm = ChatOpenAI(
            model=spec.model,
            base_url=spec.host,
            api_key=self._key(spec),
            temperature=spec.temperature,
            max_tokens=max_tokens,
            seed=0,
            streaming=True,  # tokens stream through LangGraph; `stream_usage` gives the token counts
            stream_usage=True,
            max_retries=0,  # the graph's retry policy decides
            http_client=client,
        )
        try:
            reply = answer_watched(llm, messages, deadline, idle, client.close, f"the server at {spec.host}")
        except BackendError:
            raise
        except Exception as exc:  # the openai client's errors: connection, timeout, a 4xx/5xx from the server
            import openai

            if isinstance(exc, openai.APIConnectionError):  # refused, reset, timed out: worth asking again
                raise BackendError(f"the server at {spec.host} is unreachable ({exc})", transient=True) from None
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
            raise BackendError(
                f"the server at {spec.host} failed to answer with {spec.model}: {first}",
                transient=isinstance(exc, openai.InternalServerError),
            ) from None
        finally:
            client.close()
        return reply_of(reply)
