"""Plain-text helpers shared by the compressor, the knowledge base and every entry point.

Tokens are whitespace-separated words. Hard-wrapped paragraphs are re-joined
before sentences are split; tables, lists, headings and code stay line by line.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator

from ech0_moe.errors import InputError

MAX_QUERY_CHARS = 32_000
# words too common to say what a sentence or passage is about (the compressor and BM25 skip them)
STOPWORDS = frozenset(
    """a an the and or but if then so of to in on at by for with from as is are was were be been being
    it its this that these those there here which who whom whose what when where why how than too very
    can could should would may might must will shall do does did done have has had having not no nor
    just also only such into onto over under about above below up down out off again further once
    i me my we our you your he him his she her they them their all any both each few more most other
    some same own s t don now""".split()
)
_BLOCK_SPLIT = re.compile(r"\n\s*\n")
_SENT = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(\[`])")
_SETEXT = re.compile(r"[=\-]{3,}")
_HEADING = re.compile(r"#{1,6}(?:\s|$)")  # "# Title"; not "#define" or "#!/bin/sh"
_CODE_LINE = re.compile(r"(?: {4}|\t)")
_LINE_UNIT = re.compile(r"^(?:\s*(?:[|#>]|[*+\-]\s|\d+[.)]\s|```)|\s{4})")


_INVISIBLE = re.compile("[\u0000-\u0008\u000e-\u001f\u007f-\u009f\u200b-\u200f\u2060-\u2064\ufeff\u00ad]")


def check_query(query: object) -> None:
    """Raise `InputError` for a query that is not text, empty or oversized."""
    if not isinstance(query, str):
        raise InputError(f"query must be text, got {type(query).__name__}")
    try:
        query.encode("utf-8")
    except UnicodeEncodeError as exc:  # lone surrogates: undecodable bytes on a command line, or broken text
        raise InputError(f"query is not valid text (an undecodable character at position {exc.start})") from None
    if not _INVISIBLE.sub("", query).strip():  # zero-width and control characters show nothing
        raise InputError("empty query: ask a question")
    if len(query) > MAX_QUERY_CHARS:
        raise InputError(f"query too long: {len(query)} characters (limit {MAX_QUERY_CHARS})")


CHARS_PER_TOKEN = 4  # English text in a Llama-style BPE vocabulary: ~4 characters a token


def check_fits(query: str, system_prompt: str, answer_tokens: int, n_ctx: int, expert: str) -> None:
    """Raise `InputError` when the query, the expert's system prompt and its answer cannot fit the
    expert's context window (estimated at ~4 characters a token) - before any model loads."""
    need = (len(query) + len(system_prompt)) // CHARS_PER_TOKEN + answer_tokens + 16
    if need > n_ctx:
        raise InputError(
            f"query too long for expert {expert!r}: about {need} tokens with its answer, "
            f"its context window (n_ctx) is {n_ctx}"
        )


def count_tokens(text: str) -> int:
    return len(text.split())


def split_blocks(text: str) -> list[str]:
    """Paragraphs (wrapped lines joined) and structural lines (tables, lists, headings, code)."""
    units: list[str] = []
    for block in _BLOCK_SPLIT.split(text):
        lines = [ln for ln in block.splitlines() if ln.strip()]
        if not lines:
            continue
        if len(lines) >= 2 and _SETEXT.fullmatch(lines[1].strip()):  # "Title\n=====" heading
            units.append("# " + lines[0].strip())
            lines = lines[2:]
            if not lines:
                continue
        if any(_LINE_UNIT.match(ln) for ln in lines):
            # a line indented 4 spaces is code (CommonMark; html2text's <pre>): it keeps an indent,
            # so `#  define X` in C is never read as a heading
            units += [("    " if _CODE_LINE.match(ln) else "") + ln.strip() for ln in lines]
        else:
            units.append(" ".join(ln.strip() for ln in lines))
    return units


def split_sentences(text: str) -> list[str]:
    return [s.strip() for unit in split_blocks(text) for s in _SENT.split(unit) if s.strip()]


MAX_SENTENCE_CHARS = 2_000  # a "sentence" longer than this (a minified file, a 5 MB line) is cut


def _pieces(sentence: str) -> list[str]:
    """`sentence`, cut into pieces of at most MAX_SENTENCE_CHARS (at a space where there is one)."""
    pieces = []
    while len(sentence) > MAX_SENTENCE_CHARS:
        cut = sentence.rfind(" ", 0, MAX_SENTENCE_CHARS)
        cut = cut if cut > MAX_SENTENCE_CHARS // 2 else MAX_SENTENCE_CHARS
        pieces.append(sentence[:cut])
        sentence = sentence[cut:].lstrip()
    return [*pieces, sentence]


def chunk_text(text: str, max_tokens: int = 160, overlap: int = 1) -> list[tuple[str, str]]:
    """Split a document into (heading, chunk) pairs of about `max_tokens` words.

    Chunks follow sentence boundaries, carry `overlap` trailing sentences of the
    previous chunk for context, and never straddle a markdown heading.
    """
    return list(chunk_units(split_blocks(text), max_tokens, overlap))


def chunk_units(units: Iterable[str], max_tokens: int = 160, overlap: int = 1) -> Iterator[tuple[str, str]]:
    """`chunk_text` over units of `split_blocks`, as they come (a streamed file's blocks, one by one)."""
    heading = ""
    current: list[str] = []
    fresh = 0  # sentences not yet emitted in a chunk
    in_code = False  # inside a ``` fence: `#define`, `# comment` are code, not headings
    for unit in units:
        if not in_code and (_HEADING.match(unit) or _SETEXT.fullmatch(unit)):
            if fresh:
                yield heading, " ".join(current)
            current, fresh = [], 0
            if unit.startswith("#"):
                heading = unit.lstrip("#").strip()
            continue
        in_code ^= unit.count("```") % 2 == 1
        for sentence in (piece for s in _SENT.split(unit) for piece in _pieces(s)):
            text = " ".join(current)
            if fresh and (
                count_tokens(text) + count_tokens(sentence) > max_tokens
                or len(text) + len(sentence) > 2 * MAX_SENTENCE_CHARS
            ):
                yield heading, text
                current, fresh = current[-overlap:] if overlap else [], 0
            current.append(sentence.strip())
            fresh += 1
    if fresh:
        yield heading, " ".join(current)
