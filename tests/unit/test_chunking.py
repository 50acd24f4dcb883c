"""Document chunking for the knowledge base (no model needed)."""

from __future__ import annotations

import itertools

from ech0_moe.text import chunk_text

README = """# Install

Run the build. It takes a minute.

```c
#define CAT_ROOT "/var/catman"
# a shell comment inside a fence
```

## Usage

Call the tool with a file.
"""


def test_headings_split_chunks_and_code_lines_are_kept_not_taken_for_headings() -> None:
    chunks = chunk_text(README)
    assert [h for h, _ in chunks] == ["Install", "Usage"]
    install = chunks[0][1]
    assert '#define CAT_ROOT "/var/catman"' in install and "# a shell comment inside a fence" in install
    assert chunks[1][1] == "Call the tool with a file."


def test_long_text_overlaps_by_a_sentence_at_chunk_edges() -> None:
    text = " ".join(f"Sentence number {i} says something about topic {i}." for i in range(60))
    chunks = [c for _, c in chunk_text(text, max_tokens=40)]
    assert len(chunks) > 3
    for before, after in itertools.pairwise(chunks):
        assert after.startswith(before.rsplit(". ", 1)[-1])  # the last sentence opens the next chunk


def test_indented_code_is_never_a_heading() -> None:
    """`#  define X` in a C listing (a <pre> becomes code indented 4 spaces) stays code."""
    from ech0_moe.text import chunk_units, split_blocks

    code = "    #if defined(WIN32)\n    #  define SET_BINARY_MODE(file) setmode(file)\n    #endif\n"
    text = f"# zlib usage\n\nIntro.\n\n{code}\nAfter.\n"
    assert {h for h, _ in chunk_units(split_blocks(text))} == {"zlib usage"}
