"""Documents in: every format `kb add` reads, through langchain-community's document loaders.

- text, Markdown, reStructuredText and source code: `TextLoader`;
- PDF: `PyPDFLoader` (pypdf), one part per page, so every chunk keeps its page;
- HTML: the page's text as Markdown (`Html2TextTransformer`), after navigation, scripts,
  styles, headers, footers and forms are removed, so headings become the chunks' headings;
- DOCX: `Docx2txtLoader` (paragraphs and table cells).

A file is read whole or not at all: a scanned PDF with no text layer, an encrypted or truncated
PDF, a damaged DOCX, undecodable or binary text and an unknown type each raise `Unreadable` with
a one-line reason, and nothing of that file is stored. What decompresses or nests is bounded
before it is parsed (`MAX_DOCX_UNPACKED`, `MAX_PDF_PAGES`, `MAX_HTML_DEPTH`), and a file is read
through one descriptor opened without following a link, that must be the file the folder walk saw
(`opened`): a file swapped for a symlink mid-run is skipped, never followed.
"""

from __future__ import annotations

import codecs
import contextlib
import errno
import hashlib
import os
import re
import stat
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
MAX_DOCX_UNPACKED = 64_000_000  # bytes a DOCX's parts unpack to, checked from the zip's directory first
MAX_PDF_PAGES = 2_000
MAX_HTML_DEPTH = 256  # elements nested inside each other (the parser recurses on them)


class Unreadable(Exception):
    """A file `kb add` skips, with the reason as its message."""


@dataclass(frozen=True)
class Part:
    """A document's text, or one page of it (`page` counts from 1; 0: not paged)."""

    text: str
    page: int = 0


@contextlib.contextmanager
def opened(path: Path, expect: os.stat_result | None = None) -> Iterator[Path]:
    """`path` opened once, without following a symlink in its last part, and checked to be the
    regular file `expect` (the walk's `stat`) describes; yields a path that reads that very
    descriptor (`/proc/self/fd/N`), so the loaders read what was checked, whatever the name
    points to by then."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise Unreadable("a symlink swapped in after the folder was read (not followed)") from None
        raise Unreadable(exc.strerror or str(exc)) from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise Unreadable("not a regular file")
        if expect is not None and (st.st_dev, st.st_ino) != (expect.st_dev, expect.st_ino):
            raise Unreadable("replaced by another file after the folder was read (not read)")
        proc = Path(f"/proc/self/fd/{fd}")
        yield proc if proc.exists() else path
    finally:
        os.close(fd)


def load(path: Path, expect: os.stat_result | None = None) -> tuple[list[Part], str]:
    """The whole text of `path` by its type (see the module docstring), and the content hash of
    the bytes read (through one descriptor: `opened`)."""
    kind = KINDS.get(path.suffix.lower())
    if kind is None:
        raise Unreadable(f"not a type kb add reads ({', '.join(sorted(SUFFIXES))})")
    with opened(path, expect) as src:
        file_hash = hashlib.sha256(src.read_bytes()).hexdigest()[:32]
        match kind:
            case "text":
                parts = [Part(_text(src))]
            case "pdf":
                parts = _pdf(src)
            case "html":
                parts = [Part(_html(src))]
            case _:
                parts = [Part(_docx(src))]
    return parts, file_hash


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
        if len(reader.pages) > MAX_PDF_PAGES:
            raise Unreadable(f"a PDF of {len(reader.pages)} pages (limit {MAX_PDF_PAGES})")
        if not any(page.get("/Contents") for page in reader.pages):  # nothing drawn on any page
            raise Unreadable("no text layer (every page is empty)")
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

    text = _text(path)
    if (depth := _nesting(text)) > MAX_HTML_DEPTH:
        raise Unreadable(f"HTML nested {depth} elements deep or more (limit {MAX_HTML_DEPTH})")
    soup = BeautifulSoup(text, "html.parser")
    for tag in soup.find_all(NOT_CONTENT):
        tag.decompose()
    body = soup.find("main") or soup.find("article") or soup.body or soup
    (page,) = Html2TextTransformer().transform_documents([Document(page_content=str(body))])
    return page.page_content


_TAG = re.compile(r"<(/?)([A-Za-z][\w:-]*)[^>]*?(/?)>")
_VOID = frozenset(
    "area base br col embed hr img input link meta param source track wbr p li td tr th option".split()
)  # never nested in practice, or closed implicitly: not counted


def _nesting(html: str) -> int:
    """How deep the elements of `html` nest (stops counting past MAX_HTML_DEPTH)."""
    depth = 0
    for m in _TAG.finditer(html):
        name = m.group(2).lower()
        if name in _VOID or m.group(3):
            continue
        depth = max(0, depth - 1) if m.group(1) else depth + 1
        if depth > MAX_HTML_DEPTH:
            break
    return depth


def _docx(path: Path) -> str:
    from langchain_community.document_loaders import Docx2txtLoader

    if not zipfile.is_zipfile(path):
        raise Unreadable("not a readable DOCX (truncated or damaged)")
    with zipfile.ZipFile(path) as z:  # the sizes its directory declares, before anything is unpacked
        unpacked = sum(i.file_size for i in z.infolist())
    if unpacked > MAX_DOCX_UNPACKED:
        raise Unreadable(f"a DOCX that unpacks to {unpacked / 1e6:.0f} MB (limit {MAX_DOCX_UNPACKED / 1e6:.0f} MB)")
    try:
        return "\n\n".join(d.page_content for d in Docx2txtLoader(str(path)).load())
    except (zipfile.BadZipFile, KeyError, ValueError, OSError, SyntaxError) as exc:  # ParseError is a SyntaxError
        raise Unreadable(f"not a readable DOCX ({type(exc).__name__})") from None
