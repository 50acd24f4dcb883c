"""A stand-in expert for benchmarks that measure what reaches a model, not what it answers: it
loads nothing, records every chat's messages and answers one short sentence, through a LangChain
chat model like the real runtimes (so the graph streams and learns as usual)."""

from __future__ import annotations

from typing import Any

from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage

from ech0_moe.config import ExpertSpec
from ech0_moe.serving.records import Message, Reply
from ech0_moe.serving.runtimes.chat_models import Deadline, reply_of, run_config

ANSWER = "Here is a short, complete answer."


def canned_reply(text: str, prompt: str, max_tokens: int, deadline: Deadline | None) -> Reply:
    """`text` (cut at `max_tokens` words, then finish "length") as a reply streamed through a
    LangChain chat model, as the real runtimes answer."""
    words = text.split()
    kept, finish = words[:max_tokens], "length" if len(words) > max_tokens else "stop"
    usage = {"input_tokens": len(prompt.split()), "output_tokens": len(kept), "total_tokens": 0}
    answer = AIMessage(" ".join(kept), response_metadata={"finish_reason": finish}, usage_metadata=usage)
    return reply_of(GenericFakeChatModel(messages=iter([answer])).invoke(prompt, config=run_config(deadline)))


class RecordingRuntime:
    """Loads instantly; `prompts` and `systems` hold each chat's user and system messages."""

    name = "recorder"

    def __init__(self) -> None:
        self.prompts: list[str] = []
        self.systems: list[str] = []

    def load(self, spec: ExpertSpec) -> tuple[Any, int]:
        return object(), spec.size_bytes

    def unload(self, spec: ExpertSpec, handle: Any) -> None:
        return None

    def chat(
        self, spec: ExpertSpec, handle: Any, messages: list[Message], max_tokens: int, deadline: Deadline | None
    ) -> Reply:
        self.prompts.append(messages[-1]["content"])
        self.systems.append(next((m["content"] for m in messages if m["role"] == "system"), ""))
        return canned_reply(ANSWER, messages[-1]["content"], max_tokens, deadline)

    def score_letters(self, spec: ExpertSpec, handle: Any, messages: list[Message], letters: str) -> list[float] | None:
        return None

    def estimate_size(self, spec: ExpertSpec) -> int:
        return spec.size_bytes

    def resident(self, spec: ExpertSpec) -> None:
        return None

    def adopt(self, spec: ExpertSpec) -> Any:
        raise NotImplementedError
