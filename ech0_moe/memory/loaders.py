"""Documents in: every format `kb add` reads, through langchain-community's document loaders.

- text, Markdown, reStructuredText and source code: `TextLoader`;
- PDF: `PyPDFLoader` (pypdf), one part per page, so every chunk keeps its page;
- HTML: the page's text as Markdown (`Html2TextTransformer`), after navigation, scripts,
  styles, headers, footers and forms are removed, so headings become the chunks' headings;
- DOCX: `Docx2txtLoader` (paragraphs and table cells).

A file is read whole or not at all: a scanned PDF with no text layer, an encrypted or truncated
PDF, a damaged DOCX, undecodable or binary text and an unknown type each raise `Unreadable` with
a one-line reason, and nothing of that file is stored.
"""

from __future__ import annotations

import codecs
import hashlib
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

TEXT_SUFFIXES = frozenset({".md", ".markdown", ".txt", ".rst", ".text"})
CODE_SUFFIXES = frozenset(
    {".py", ".js", ".ts", ".java", ".c", ".h", ".cc", ".cpp", ".hpp", ".go", ".rs", ".rb", ".sh", ".sql", ".toml"}
)
KINDS = {
    **dict.fromkeys(TEXT_SUFFIXES | CODE_SUFFIXES, "text"),
    ".pdf": "pdf",
    ".html": "html",
    ".htm": "html",
    ".docx": "docx",
}
SUFFIXES = frozenset(KINDS)
NOT_CONTENT = ("script", "style", "nav", "header", "footer", "aside", "noscript", "form", "svg", "iframe", "button")


class Unreadable(Exception):
    """A file `kb add` skips, with the reason as its message."""


@dataclass(frozen=True)
class Part:
    """A document's text, or one page of it (`page` counts from 1; 0: not paged)."""

    text: str
    page: int = 0


def load(path: Path) -> list[Part]:
    """The whole text of `path`, by its type (see the module docstring)."""
    match KINDS.get(path.suffix.lower()):
        case "text":
            return [Part(_text(path))]
        case "pdf":
            return _pdf(path)
        case "html":
            return [Part(_html(path))]
        case "docx":
            return [Part(_docx(path))]
        case _:
            raise Unreadable(f"not a type kb add reads ({', '.join(sorted(SUFFIXES))})")


def _text(path: Path) -> str:
    from langchain_community.document_loaders import TextLoader

    try:
        text = "".join(d.page_content for d in TextLoader(str(path), encoding="utf-8").lazy_load())
    except RuntimeError as exc:  # "Error loading PATH", raised from the real cause
        cause = exc.__cause__
        if isinstance(cause, UnicodeDecodeError):
            raise Unreadable("not UTF-8 text") from None
        raise Unreadable(getattr(cause, "strerror", None) or str(cause or exc)) from None
    if "\x00" in text:
        raise Unreadable("binary (NUL bytes)")
    return text


def check_text(path: Path, block: int = 1 << 20) -> str:
    """A big text file read once, a block at a time: its content hash, or `Unreadable` (not UTF-8,
    or NUL bytes) before anything of it is stored."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while data := fh.read(block):
            digest.update(data)
            try:
                text = decoder.decode(data)
            except UnicodeDecodeError:
                raise Unreadable("not UTF-8 text") from None
            if "\x00" in text:
                raise Unreadable("binary (NUL bytes)")
        try:
            decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            raise Unreadable("not UTF-8 text (cut inside a character)") from None
    return digest.hexdigest()[:32]


def text_blocks(path: Path, block: int = 1 << 20) -> Iterator[str]:
    """A text file in pieces of about `block` characters, each ending at a blank line where one
    is near (so paragraphs, headings and chunks come out as from the whole text)."""
    carry = ""
    with path.open(encoding="utf-8") as fh:
        while data := fh.read(block):
            text = carry + data
            cut = text.rfind("\n\n")
            if cut < len(text) // 2:  # no paragraph break in the second half: cut at a line, else anywhere
                cut = max(text.rfind("\n"), len(text) // 2)
            yield text[:cut]
            carry = text[cut:]
    if carry.strip():
        yield carry


def _pdf(path: Path) -> list[Part]:
    from langchain_community.document_loaders import PyPDFLoader
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    with path.open("rb") as fh:  # pypdf reads a cut-off file leniently: refuse it whole instead
        fh.seek(max(0, path.stat().st_size - 2048))
        if b"%%EOF" not in fh.read():
            raise Unreadable("a truncated PDF (no end-of-file marker)")
    try:
        reader = PdfReader(str(path))
        if reader.is_encrypted and not reader.decrypt(""):
            raise Unreadable("an encrypted PDF (it needs a password)")
        pages = PyPDFLoader(str(path), mode="page").load()
    except (PdfReadError, ValueError, KeyError, OSError) as exc:
        raise Unreadable(f"not a readable PDF ({(str(exc).splitlines() or [type(exc).__name__])[0]})") from None
    parts = [Part(d.page_content, int(d.metadata.get("page", i)) + 1) for i, d in enumerate(pages)]
    if not any(p.text.strip() for p in parts):
        raise Unreadable("no text layer (a scanned PDF? kb add does not recognise text in images)")
    return [p for p in parts if p.text.strip()]


def _html(path: Path) -> str:
    from bs4 import BeautifulSoup
    from langchain_community.document_transformers import Html2TextTransformer
    from langchain_core.documents import Document

    soup = BeautifulSoup(_text(path), "html.parser")
    for tag in soup.find_all(NOT_CONTENT):
        tag.decompose()
    body = soup.find("main") or soup.find("article") or soup.body or soup
    (page,) = Html2TextTransformer().transform_documents([Document(page_content=str(body))])
    return page.page_content


def _docx(path: Path) -> str:
    from langchain_community.document_loaders import Docx2txtLoader

    if not zipfile.is_zipfile(path):
        raise Unreadable("not a readable DOCX (truncated or damaged)")
    try:
        return "\n\n".join(d.page_content for d in Docx2txtLoader(str(path)).load())
    except (zipfile.BadZipFile, KeyError, ValueError, OSError) as exc:
        raise Unreadable(f"not a readable DOCX ({type(exc).__name__})") from None
