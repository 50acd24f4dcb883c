"""answer: generate the solution with the loaded expert."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from langgraph.errors import NodeError
from langgraph.runtime import Runtime
from langgraph.types import RetryPolicy

from ech0_moe.choices import choices_prompt
from ech0_moe.errors import BackendError
from ech0_moe.graph.context import Context
from ech0_moe.graph.state import State
from ech0_moe.nodes._common import context, run_services, timed
from ech0_moe.safety import inert, reference_note, without_markers
from ech0_moe.services import ServiceProvider, Services
from ech0_moe.serving.records import Acquired, Message, Reply
from ech0_moe.text import count_tokens

WORDS_PER_TOKEN = 0.3  # words asked for per token of the cap, leaving room to finish (docs/benchmarks.md: bench finish)


def length_hint(max_tokens: int) -> str:
    """The answer budget, in words, as the expert is told it."""
    return f"Answer in at most {max(5, int(max_tokens * WORDS_PER_TOKEN))} words and end with a complete sentence."


def ask_expert(
    svc: Services, expert: str, prompt: str, ctx: Context, choices: list[str]
) -> tuple[Reply, Acquired, dict[str, Any]]:
    """Ask one expert: its system prompt plus the (compressed) prompt. An open question is
    answered through a LangChain chat model (so its tokens stream); a multiple-choice one is
    answered by the option the expert picks (`choices`). Returns the reply, what getting the
    expert cost (a load if it had to be (re)loaded) and where it ran, and the choice fields."""
    spec = svc.pool.specs[expert]
    system = spec.system_prompt
    if ctx.length_hint and not choices:
        system += f" {length_hint(ctx.max_tokens or spec.max_tokens)}"
    if note := reference_note(prompt):  # memory came quoted: say it is data, not instructions
        system += f" {note}"
    messages: list[Message] = [
        {"role": "system", "content": system},
        {"role": "user", "content": inert(choices_prompt(prompt, choices) if choices else prompt)},
    ]
    if not choices:
        reply, acquired = svc.pool.chat(expert, messages, ctx.max_tokens or None, timeout=ctx.answer_timeout)
        return replace(reply, text=without_markers(reply.text)), acquired, {}
    choice, reply, acquired = svc.pool.choose(expert, messages, len(choices), timeout=ctx.answer_timeout)
    fields = {"choice": choice.index, "choice_scores": list(choice.scores), "choice_method": choice.method}
    return replace(reply, text=choice.text(choices)), acquired, fields


@timed("answer")
def answer(state: State, runtime: Runtime[Context], services: ServiceProvider) -> dict[str, Any]:
    """Answer the prompt (or the raw query on the basic path) with the routed expert;
    nothing to do when loading it already failed (the error is in the result)."""
    if state.error:
        return {}
    svc = run_services(runtime, services)
    prompt = state.prompt or state.query
    reply, acquired, choice = ask_expert(svc, state.expert_used, prompt, context(runtime), state.choices)
    tokens = {"prompt": reply.prompt_tokens, "completion": reply.completion_tokens}
    if "prompt_after_compression" not in state.tokens:  # basic: nothing was compressed
        tokens.update(prompt_before_compression=count_tokens(prompt), prompt_after_compression=count_tokens(prompt))
    update: dict[str, Any] = {"solution": reply.text, "truncated": reply.truncated, "tokens": tokens}
    if reply.truncated:
        update["warnings"] = [truncated_warning(reply.completion_tokens)]
    update.update(choice, served_by=acquired.served_by)
    if acquired.swapped:  # evicted by a concurrent run between swap_load and answer: reloaded here
        update.update(swapped=True, load_seconds=round(state.load_seconds + acquired.load_seconds, 4))
    return update


def truncated_warning(tokens: int) -> str:
    return f"the answer stopped at its token cap ({tokens} tokens): it is incomplete and was not learned"


def is_transient(exc: BaseException) -> bool:
    return isinstance(exc, BackendError) and exc.transient


# A model runtime that fails mid-answer (connection dropped, runner crashed) is asked again.
RETRY = RetryPolicy(max_attempts=3, initial_interval=0.2, backoff_factor=2.0, retry_on=is_transient)


def answer_failed(state: State, error: NodeError) -> dict[str, Any]:
    """After the retries: a clear error in the result (nothing is learned from it)."""
    tried = f" after {RETRY.max_attempts} attempts" if is_transient(error.error) else ""
    return {"solution": "", "error": f"{error.node} failed{tried}: {error.error}"}
