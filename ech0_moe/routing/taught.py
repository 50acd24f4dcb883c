"""Routing examples the user gives without writing any, kept beside the knowledge base.

- chunks of documents added with a domain (`kb add --domain medicine docs/`): up to
  `PER_DOMAIN` per domain, each an example for that domain's experts;
- questions the user says an expert should answer (`ech0-moe feedback "..." --expert law`).

They live in `routing-examples.jsonl` in the knowledge-base folder (one JSON object a line:
text, and domain or expert, source and owner), so reading them opens no database; the router
refits on them when it is next made for that folder (`rows.taught_rows`; the fit is cached by
content). Every row has an owner (`owners`): an asker's feedback and the documents of its
namespace steer its own routing at once, and everyone else's only within a bound. They are
routing rows only: nothing here reaches a prompt.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ech0_moe.config import PoolConfig
from ech0_moe.errors import InputError, KnowledgeBaseError
from ech0_moe.owners import LOCAL, SHARED

FILE = "routing-examples.jsonl"
PER_DOMAIN = 500  # document chunks kept per domain as routing examples
MAX_TEXT = 2000  # characters of one example


def read(kb_dir: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The folder's taught rows (none when it has no file; unreadable lines are skipped)."""
    path = Path(kb_dir) / FILE
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return []
    rows = []
    for line in lines:
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict) and isinstance(row.get("text"), str) and (row.get("domain") or row.get("expert")):
            rows.append(row)
    return rows


def row_owner(row: dict[str, Any]) -> str:
    """A row's owner; rows older than owners: feedback was the local user's, documents shared."""
    owner = row.get("owner")
    return owner if isinstance(owner, str) and owner else LOCAL if row.get("source") == "feedback" else SHARED


def _unwritable(path: Path, exc: OSError) -> KnowledgeBaseError:
    why = exc.strerror or exc
    return KnowledgeBaseError(f"routing examples {path} cannot be written ({why}): nothing was recorded")


def _append(kb_dir: Path, rows: Iterable[dict[str, Any]]) -> int:
    rows = list(rows)
    if rows:
        try:
            kb_dir.mkdir(parents=True, exist_ok=True)
            with open(kb_dir / FILE, "a", encoding="utf-8") as fh:
                fh.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
        except OSError as exc:  # a read-only folder, a full disk: one line, the file as it was
            raise _unwritable(kb_dir / FILE, exc) from None
    return len(rows)


def add_documents(kb_dir: Path, domain: str, chunks: Iterable[tuple[str, str]], owner: str = SHARED) -> int:
    """Keep (text, source) chunks of `domain`'s documents in `owner`'s namespace, up to PER_DOMAIN
    for the domain and owner in all."""
    have = [r for r in read(kb_dir) if row_owner(r) == owner]
    room = PER_DOMAIN - sum(r.get("domain") == domain for r in have)
    known = {(r["text"], r.get("domain")) for r in have}
    rows = []
    for text, source in chunks:
        if len(rows) >= room:
            break
        text = " ".join(text.split())[:MAX_TEXT]
        if text and (text, domain) not in known:
            known.add((text, domain))
            rows.append({"text": text, "domain": domain, "source": source, "owner": owner})
    return _append(kb_dir, rows)


def add_feedback(kb_dir: Path, config: PoolConfig, question: str, expert: str, owner: str = LOCAL) -> dict[str, Any]:
    """Record that `expert` should answer `question`, as `owner`'s feedback (one line naming the
    problem if it cannot be)."""
    if expert not in config.names:
        raise InputError(f"unknown expert {expert!r}; known: {', '.join(config.names)}")
    text = " ".join(question.split())
    if not text:
        raise InputError('feedback needs the question: ech0-moe feedback "QUESTION" --expert NAME')
    row = {"text": text[:MAX_TEXT], "expert": expert, "source": "feedback", "owner": owner, "at": round(time.time(), 3)}
    _append(Path(kb_dir), [row])
    return row


def forget_source(kb_dir: Path, source: str, owner: str | None = None) -> int:
    """Drop the rows of one source (a document's path, or `feedback`), only `owner`'s when given
    (`kb forget --source`); returns how many."""
    path = Path(kb_dir) / FILE
    rows = read(kb_dir)
    kept = [r for r in rows if r.get("source") != source or (owner is not None and row_owner(r) != owner)]
    if len(kept) != len(rows):
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        try:
            tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in kept), encoding="utf-8")
            tmp.replace(path)
        except OSError as exc:
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
            raise _unwritable(path, exc) from None
    return len(rows) - len(kept)
