"""Who owns what the system remembers: every stored entry and taught routing row has an owner.

- A learned answer belongs to the asker who got it; a document to the namespace it was added to
  (`kb add --namespace NAME`; by default `SHARED`, which every asker reads).
- An asker reads its own namespace and the shared one, never another asker's.
- The asker is `Context.user`, else the user a LangGraph server authenticated for the run, else
  `LOCAL` (the command line and a plain `invoke`: one owner, as before there were owners).
- Entries stored before owners existed: documents are shared, learned answers are `LOCAL`'s.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from typing import Any

from ech0_moe.errors import InputError, shown

SHARED = "shared"  # documents every asker reads
LOCAL = "local"  # the asker when nobody is named
_NAME = re.compile(r"[\w.@:+\-]{1,128}")


def check_owner(name: object, *, what: str = "user", shared_ok: bool = False) -> str:
    """`name` as an owner (letters, digits, `_ . @ : + -`, at most 128); an asker is never `SHARED`
    (its learned answers would reach everyone). Anything else is one `InputError` line."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        allowed = "letters, digits, '_', '.', '@', ':', '+' or '-' (at most 128)"
        raise InputError(f"{what} must be {allowed}, got {shown(name)}")
    if name == SHARED and not shared_ok:
        raise InputError(f"{what} {shown(SHARED)} is the namespace every asker reads; an asker cannot be it")
    return name


def owner_of(meta: Mapping[str, Any]) -> str:
    """The owner of a stored entry (see the module docstring for entries older than owners)."""
    owner = meta.get("owner")
    if isinstance(owner, str) and owner:
        return owner
    return LOCAL if meta.get("kind") == "learned" else SHARED


def readable_by(asker: str | None) -> tuple[str, ...] | None:
    """The namespaces `asker` reads: its own and the shared one (None: every namespace, for admin commands)."""
    return None if asker is None else (asker, SHARED) if asker != SHARED else (SHARED,)


def owner_of_identity(user_id: object) -> str:
    """The owner for a LangGraph server's user id: the id itself when it is a plain name, else a
    hash of it (odd characters, too long, or the shared namespace's name); no id: `LOCAL`."""
    if not isinstance(user_id, str) or not user_id:
        return LOCAL
    try:
        return check_owner(user_id)
    except InputError:
        return "user:" + hashlib.sha256(user_id.encode()).hexdigest()[:24]
