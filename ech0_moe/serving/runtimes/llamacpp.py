"""In-process llama.cpp (llama-cpp-python) running GGUF files: the embedded default."""

from __future__ import annotations

import functools
import os
from typing import Any

from ech0_moe.config import ExpertSpec
from ech0_moe.errors import BackendError
from ech0_moe.gguf import N_BATCH, N_UBATCH, loaded_bytes
from ech0_moe.paths import env_threads
from ech0_moe.safety import inert
from ech0_moe.serving.records import Message, Reply
from ech0_moe.serving.runtimes.chat_models import STOP, Deadline, LlamaCppChatModel, reply_of, run_config

# `make install` builds llama.cpp for x86-64-v3 (AVX2) without AMX: ggml's AMX matmul
# segfaults on the first batched decode on Sapphire Rapids CPUs (ggml-org/llama.cpp#20824).


@functools.cache
def _libc() -> Any:
    import ctypes
    import ctypes.util

    return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")


def release_freed_memory() -> None:
    """Hand memory a closed model freed back to the OS (glibc keeps freed heap otherwise, and the
    process's resident size would keep the old KV cache beside the next model's)."""
    trim = getattr(_libc(), "malloc_trim", None)
    if trim is not None:
        trim(0)


def amx_problem(system_info: str, allow: bool = False) -> str | None:
    """Why a llama.cpp build with these features (`llama_print_system_info()`) must not
    run here, or None: AMX kernels crash the process unless `allow`."""
    if "AMX_INT8 = 1" not in system_info or allow:
        return None
    return (
        "llama-cpp-python was compiled with AMX kernels, which segfault on this CPU "
        "(ggml-org/llama.cpp#20824): rebuild it without them with `make llama-rebuild` "
        "(or set ECH0_ALLOW_AMX=1)"
    )


@functools.cache
def check_build() -> None:
    """Refuse the installed llama.cpp build if it has AMX kernels; ECH0_ALLOW_AMX=1 skips this."""
    import llama_cpp

    info = llama_cpp.llama_print_system_info().decode(errors="replace")
    problem = amx_problem(info, allow=os.environ.get("ECH0_ALLOW_AMX") == "1")
    if problem:
        raise BackendError(problem)


def control_tokens(llm: Any) -> tuple[str, ...]:
    """The texts of the model's control and user-defined tokens (`<|im_start|>`, `<file_sep>`, ...):
    llama-cpp-python tokenizes the formatted chat prompt with special tokens on, so these strings
    must never reach it from text a user, a document or a learned answer wrote (`text.inert`)."""
    import llama_cpp

    vocab = llama_cpp.llama_model_get_vocab(llm.model)
    flags = llama_cpp.LLAMA_TOKEN_ATTR_CONTROL | llama_cpp.LLAMA_TOKEN_ATTR_USER_DEFINED
    found = (
        llm._model.token_get_text(i) for i in range(llm.n_vocab()) if llama_cpp.llama_token_get_attr(vocab, i) & flags
    )
    return tuple(sorted({t for t in found if len(t) > 1}, key=len, reverse=True))


def _inert_messages(handle: Any, messages: list[Message]) -> list[Message]:
    """Every message but the system prompt (experts.yaml's own) with the model's control tokens inert."""
    specials = getattr(handle, "ech0_specials", ())
    return [m if m["role"] == "system" else {**m, "content": inert(m["content"], specials)} for m in messages]


def _unreadable(spec: ExpertSpec, exc: OSError) -> BackendError:
    return BackendError(f"expert {spec.name!r}: cannot read model file {spec.model}: {exc.strerror}")


class LlamaCppRuntime:
    """Loads a GGUF with `llama_cpp.Llama`; unload frees it at once with `close()`."""

    name = "llamacpp"

    def __init__(self, n_threads: int | None = None) -> None:
        self.n_threads = n_threads or env_threads() or (os.cpu_count() or 2)

    def load(self, spec: ExpertSpec) -> tuple[Any, int]:
        size = self.estimate_size(spec)  # a damaged file is refused here, before llama.cpp reads it
        check_build()
        from llama_cpp import Llama

        try:
            llm = Llama(
                model_path=spec.model,
                n_ctx=spec.n_ctx,
                n_threads=self.n_threads,
                n_batch=N_BATCH,
                n_ubatch=N_UBATCH,
                verbose=False,
            )
        except (ValueError, RuntimeError) as exc:
            raise BackendError(f"expert {spec.name!r}: llama.cpp could not load {spec.model}: {exc}") from None
        llm.ech0_specials = control_tokens(llm)
        return llm, size

    def unload(self, spec: ExpertSpec, handle: Any) -> None:
        handle.close()
        release_freed_memory()

    def estimate_size(self, spec: ExpertSpec) -> int:
        """The loaded footprint (`footprint_bytes`), from the file's header: known before the pool
        evicts anything for it, so two models that do not fit together are never both admitted."""
        try:
            return loaded_bytes(spec.model, spec.n_ctx)
        except OSError as exc:
            raise _unreadable(spec, exc) from None
        except ValueError as exc:
            raise BackendError(
                f"expert {spec.name!r}: {spec.model} is not a GGUF file (corrupt or wrong format: {exc})"
            ) from None

    def models(self, spec: ExpertSpec) -> None:
        return None  # a model file, not a server's list

    def resident(self, spec: ExpertSpec) -> None:
        return None  # in-process: the pool's own books are the truth

    def adopt(self, spec: ExpertSpec) -> Any:
        raise NotImplementedError("in-process models are never loaded by anyone else")

    def score_letters(self, spec: ExpertSpec, handle: Any, messages: list[Message], letters: str) -> list[float]:
        """One forward pass over the chat-formatted prompt (the model's own template, ending where
        the assistant's answer starts); the letters' log-softmax at the next position."""
        import llama_cpp
        import numpy as np
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        template = handle.metadata.get("tokenizer.chat_template")
        if not template:
            raise BackendError(f"expert {spec.name!r}: {spec.model} has no chat template to score choices with")
        model = handle._model  # llama-cpp-python's own way to read a special token's text
        formatter = Jinja2ChatFormatter(
            template=template,
            eos_token=model.token_get_text(handle.token_eos()),
            bos_token=model.token_get_text(handle.token_bos()),
        )
        prompt = formatter(messages=_inert_messages(handle, messages)).prompt
        tokens = handle.tokenize(prompt.encode("utf-8"), add_bos=False, special=True)
        if len(tokens) >= handle.n_ctx():
            raise BackendError(f"expert {spec.name!r}: the question and its choices exceed n_ctx {handle.n_ctx()}")
        handle.reset()
        handle.eval(tokens)
        logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(handle.ctx, -1), shape=(handle.n_vocab(),))
        top = float(logits.max())
        log_total = top + float(np.log(np.exp(logits - top).sum()))
        ids = [handle.tokenize(letter.encode(), add_bos=False, special=False)[0] for letter in letters]
        return [round(float(logits[i]) - log_total, 4) for i in ids]

    def chat(
        self, spec: ExpertSpec, handle: Any, messages: list[Message], max_tokens: int, deadline: Deadline | None
    ) -> Reply:
        model = LlamaCppChatModel(
            llm=handle, max_tokens=max_tokens, temperature=spec.temperature, repeat_penalty=spec.repeat_penalty
        )
        safe = _inert_messages(handle, messages)
        return reply_of(model.invoke([(m["role"], m["content"]) for m in safe], config=run_config(deadline), stop=STOP))
