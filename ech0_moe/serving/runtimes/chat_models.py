"""LangChain chat models for the experts, so answers stream like any LangGraph app's.

- llama.cpp: `LlamaCppChatModel`, a small `BaseChatModel` over the `Llama` the pool has
  loaded (the pool keeps owning loading, unloading and the budget; langchain-community's
  `ChatLlamaCpp` loads its own copy of the weights, which would break the budget).
- Ollama: langchain-ollama's `ChatOllama` (see `runtimes/ollama.py`).

Called inside a graph node, LangGraph's `stream_mode="messages"` receives every token
(with `langgraph_node` metadata) even though the node just calls `invoke`.
"""

from __future__ import annotations

import contextvars
import re
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from langchain_core.callbacks import BaseCallbackHandler, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables import RunnableConfig
from langchain_core.runnables.config import ensure_config, merge_configs

from ech0_moe.errors import BackendError
from ech0_moe.serving.records import Message, Reply

T = TypeVar("T")

ROLES = {"human": "user", "ai": "assistant", "system": "system"}


def as_chat(messages: list[BaseMessage]) -> list[Message]:
    """LangChain messages as the role/content dicts chat APIs take."""
    return [{"role": ROLES.get(m.type, m.type), "content": str(m.content)} for m in messages]


# a model that continues the prompt's own shape ("Question: ... A: ...") invents the next turn:
# every runtime stops at a new question line
STOP = ["\nQuestion:", "\nQ:", "\nUser:"]
_LEAD = re.compile(r"^\s*(?:A|Answer)\s*:\s*")


def reply_of(message: BaseMessage) -> Reply:
    """The `Reply` inside a chat model's answer (finish reason and token counts from its metadata),
    without a leading "A:" or "Answer:" that echoes the prompt's shape."""
    meta = message.response_metadata or {}
    usage = getattr(message, "usage_metadata", None) or {}
    finish = meta.get("finish_reason") or meta.get("done_reason") or ""
    return Reply(
        text=_LEAD.sub("", str(message.content).strip()),
        truncated=finish == "length",
        prompt_tokens=int(usage.get("input_tokens", 0)),
        completion_tokens=int(usage.get("output_tokens", 0)),
    )


class Deadline(BaseCallbackHandler):
    """Ends a generation that runs past `seconds` (checked at every token, and at the end) with a
    `BackendError`.
    Not transient: asking a hung or crawling backend again would only multiply the wait."""

    raise_error = True

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.end = time.monotonic() + seconds

    @property
    def remaining(self) -> float:
        return max(0.0, self.end - time.monotonic())

    def check(self) -> None:
        if time.monotonic() > self.end:
            raise BackendError(f"the answer took longer than answer_timeout ({self.seconds:g} s)")

    def on_llm_new_token(self, token: str, **kwargs: Any) -> None:
        self.check()

    def on_llm_end(self, response: Any, **kwargs: Any) -> None:  # models that do not stream
        self.check()


def run_config(deadline: Deadline | None, *handlers: BaseCallbackHandler) -> RunnableConfig:
    """The config for a chat model call: the caller's (LangGraph's streaming handler, tracing)
    plus the deadline's handler and `handlers`, added to - not replacing - the inherited callbacks."""
    ours = [h for h in (deadline, *handlers) if h is not None]
    inherited = ensure_config()
    return merge_configs(inherited, {"callbacks": ours}) if ours else inherited


class Progress(BaseCallbackHandler):
    """When the last token arrived: a host that trickles bytes but no token is stuck all the same."""

    def __init__(self) -> None:
        self.last = time.monotonic()

    def on_llm_new_token(self, token: str, **kwargs: Any) -> None:
        self.last = time.monotonic()


def within(
    seconds: float | None,
    call: Callable[[], T],
    cancel: Callable[[], None],
    progress: Progress | None = None,
    idle: float = float("inf"),
) -> T:
    """`call()` in a worker thread, waited for at most `seconds` by the clock (None: no limit), and
    while `progress` sees a token at least every `idle` s; past either, `cancel()` (closing the
    connection ends the worker at the next byte) and `TimeoutError` ("idle" for the second). Runs in
    this thread's context, so LangGraph's stream handlers still see it."""
    if seconds is None and progress is None:
        return call()
    done: dict[str, Any] = {}
    context = contextvars.copy_context()

    def run() -> None:
        try:
            done["value"] = context.run(call)
        except BaseException as exc:
            done["error"] = exc

    worker = threading.Thread(target=run, daemon=True, name="ech0-ollama")
    worker.start()
    end = time.monotonic() + seconds if seconds is not None else float("inf")
    while worker.is_alive():
        now = time.monotonic()
        if progress is not None and now - progress.last > idle:
            cancel()
            raise TimeoutError("idle")
        if now >= end:
            cancel()
            raise TimeoutError
        worker.join(min(0.25, end - now))
    if "error" in done:
        raise done["error"]
    return done["value"]


class StreamingChatModel(BaseChatModel):
    """A chat model defined by its `_stream`; a whole answer is its chunks merged."""

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        merged: ChatGenerationChunk | None = None
        for chunk in self._stream(messages, stop, run_manager, **kwargs):
            merged = chunk if merged is None else merged + chunk
        message = merged.message if merged else AIMessageChunk(content="")
        ai = AIMessage(
            content=message.content,
            response_metadata=message.response_metadata,
            usage_metadata=getattr(message, "usage_metadata", None),
        )
        return ChatResult(generations=[ChatGeneration(message=ai)])


class LlamaCppChatModel(StreamingChatModel):
    """Chat with a llama.cpp model that is already loaded (`llm`, a `llama_cpp.Llama`)."""

    llm: Any
    max_tokens: int = 128
    temperature: float = 0.0
    seed: int = 0
    repeat_penalty: float = 1.0

    @property
    def _llm_type(self) -> str:
        return "ech0-llamacpp"

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        # Evaluate every prompt from scratch: reusing the cached prefix of the previous call
        # changes the numerics, and greedy answers to the same question would differ by call order.
        self.llm.reset()
        chat = as_chat(messages)
        prompt_tokens = completion_tokens = 0
        finish = ""
        for part in self.llm.create_chat_completion(
            messages=chat,
            max_tokens=self.max_tokens,
            temperature=self.temperature,
            seed=self.seed,
            repeat_penalty=self.repeat_penalty,
            stop=stop,
            stream=True,
        ):
            choice = part["choices"][0]
            text = choice.get("delta", {}).get("content") or ""
            finish = choice.get("finish_reason") or finish
            if text:
                completion_tokens += 1
                chunk = ChatGenerationChunk(message=AIMessageChunk(content=text))
                if run_manager:
                    run_manager.on_llm_new_token(text, chunk=chunk)
                yield chunk
        prompt_tokens = int(getattr(self.llm, "n_tokens", 0))  # tokens evaluated: prompt + answer
        usage = {
            "input_tokens": max(0, prompt_tokens - completion_tokens),
            "output_tokens": completion_tokens,
            "total_tokens": prompt_tokens,
        }
        yield ChatGenerationChunk(
            message=AIMessageChunk(
                content="", response_metadata={"finish_reason": finish or "stop"}, usage_metadata=usage
            )
        )


def answer_watched(
    llm: BaseChatModel,
    messages: list[dict[str, str]],
    deadline: Deadline | None,
    idle: float,
    cancel: Callable[[], None],
    source: str,
) -> BaseMessage:
    """`llm`'s answer to `messages` (stopping at a new question line), within the answer's deadline by
    the clock and with a token at least every `idle` s; past either, `cancel()` and one `BackendError`
    naming `source` ("Ollama at URL", "the server at URL")."""
    progress = Progress()
    config = run_config(deadline, progress)
    try:
        return within(
            deadline.remaining + 1.0 if deadline else None,
            lambda: llm.invoke([(m["role"], m["content"]) for m in messages], config=config, stop=STOP),
            cancel,
            progress,
            idle,
        )
    except TimeoutError as exc:
        if str(exc) == "idle":
            raise BackendError(f"{source} sent no new token for {idle:g} s (timeout)", silent=True) from None
        raise BackendError(
            f"the answer took longer than answer_timeout ({deadline.seconds if deadline else 0:g} s): "
            f"{source} was still sending"
        ) from None
