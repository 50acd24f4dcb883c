"""`RayChatModel`: a LangChain chat model answering through the Serve application, so LangGraph's
`stream_mode="messages"` gets the tokens of a `backend: ray` expert as with the embedded default."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.messages import AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGenerationChunk

from ech0_moe.errors import BackendError, BudgetError, Ech0Error
from ech0_moe.serving.ray_serve.admin import ray_errors
from ech0_moe.serving.runtimes.chat_models import StreamingChatModel, as_chat


class RayChatModel(StreamingChatModel):
    """A LangChain chat model answering through the Serve application: the replica holding
    `expert` streams the tokens back. The last chunk's `response_metadata` carries what the
    replica did: `swapped`, `load_seconds`, `served_by`."""

    handle: Any
    expert: str
    max_tokens: int = 128
    timeout: float | None = None  # answer_timeout
    limit: float = 600.0  # ray.timeout: the whole request (load and answer), by the clock

    @property
    def _llm_type(self) -> str:
        return "ech0-ray-serve"

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        request = {
            "messages": as_chat(messages),
            "max_tokens": self.max_tokens,
            "timeout": self.timeout,
        }
        stream = self.handle.options(multiplexed_model_id=self.expert, stream=True).chat.remote(request)
        acquired: dict[str, Any] = {}
        reply: dict[str, Any] = {}
        # by the clock, not per token: a replica that never sends the next item is cancelled
        limit = min(self.limit, self.timeout or float("inf"))
        expired = threading.Event()
        timer = threading.Timer(limit, lambda: (expired.set(), stream.cancel()))
        timer.daemon = True
        timer.start()
        try:
            for item in stream:
                if "error" in item:
                    raise failure(item)
                acquired = _merge_acquired(acquired, item.get("acquired"))
                if "token" in item:
                    chunk = ChatGenerationChunk(message=AIMessageChunk(content=item["token"]))
                    if run_manager:
                        run_manager.on_llm_new_token(item["token"], chunk=chunk)
                    yield chunk
                reply = item.get("reply", reply)
        except ray_errors() as exc:  # the replica died or was replaced mid-answer: asking again may work
            if expired.is_set():  # our own cancel: the deadline passed
                what = "answer_timeout" if self.timeout and self.timeout <= self.limit else "ray.timeout"
                raise BackendError(
                    f"Ray Serve did not answer with {self.expert!r} within {limit:g} s ({what})"
                ) from None
            raise BackendError(
                f"Ray replica failed while answering with {self.expert!r}: {type(exc).__name__}", transient=True
            ) from None
        finally:
            timer.cancel()
            stream.cancel()  # a no-op once finished; stops the replica when we stop early (deadline)
        if not reply:
            raise BackendError(f"Ray replica: the answer of {self.expert!r} was cut off mid-stream", transient=True)
        usage = {
            "input_tokens": reply["prompt_tokens"],
            "output_tokens": reply["completion_tokens"],
            "total_tokens": reply["prompt_tokens"] + reply["completion_tokens"],
        }
        meta = {"finish_reason": "length" if reply["truncated"] else "stop", **acquired}
        yield ChatGenerationChunk(message=AIMessageChunk(content="", response_metadata=meta, usage_metadata=usage))


def failure(payload: dict[str, Any]) -> Ech0Error:
    """The error a replica reported as data (`serving.app._failure`)."""
    if payload.get("budget"):
        return BudgetError(payload["error"])
    return BackendError(payload["error"], transient=bool(payload.get("transient")))


def _merge_acquired(old: dict[str, Any], new: dict[str, Any] | None) -> dict[str, Any]:
    """A reload during the answer adds to the load seen before it."""
    if not new:
        return old
    if not old:
        return dict(new)
    return {
        **new,
        "swapped": old["swapped"] or new["swapped"],
        "load_seconds": old["load_seconds"] + new["load_seconds"],
    }
