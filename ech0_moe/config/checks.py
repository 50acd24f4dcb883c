"""The checks every part of `experts.yaml` is read with: each records a problem (one line) and
returns a usable default, so one read lists every problem of a file (`reader._Reader`)."""

from __future__ import annotations

import difflib
from typing import Any

from ech0_moe.config.schema import parse_size
from ech0_moe.errors import ConfigError, shown

WHOLE = frozenset({"n_ctx", "max_tokens", "replicas", "max_ongoing_requests", "threads"})


def unknown_key_problem(where: str, key: object, known: tuple[str, ...]) -> str:
    """'where.key: unknown setting (did you mean ...?)' with the closest known key."""
    close = difflib.get_close_matches(str(key), known, n=1, cutoff=0.6)
    hint = f"did you mean {close[0]!r}?" if close else f"known: {', '.join(known)}"
    return f"{where}.{key}: unknown setting ({hint})"


class Checks:
    """Collects every problem of one file; each check returns a usable default after a problem."""

    def __init__(self, fname: str) -> None:
        self.fname = fname
        self.problems: list[str] = []
        self.check_files = True  # resolve and size every model file

    def add(self, message: str) -> None:
        self.problems.append(message)

    def keys(self, raw: dict[str, Any], where: str, known: tuple[str, ...]) -> None:
        for key in raw:
            if key not in known:
                self.add(unknown_key_problem(where, key, known))

    def text(self, raw: dict[str, Any], key: str, where: str, *, required: bool = True) -> str:
        value = raw.get(key)
        if value is None or (isinstance(value, str) and not value.strip()):
            if required:
                self.add(f"{where}.{key}: missing (required)")
            return ""
        if not isinstance(value, str):
            self.add(f"{where}.{key}: expected text, got {type(value).__name__}")
            return ""
        return value.strip()

    def texts(self, raw: dict[str, Any], key: str, where: str) -> tuple[str, ...]:
        value = raw.get(key) or []
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            self.add(f"{where}.{key}: expected a list of strings")
            return ()
        return tuple(v.strip() for v in value if v.strip())

    def number(self, raw: dict[str, Any], key: str, where: str, default: float, bounds: tuple[float, float]) -> float:
        value = raw.get(key, default)
        low, high = bounds
        if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
            self.add(f"{where}.{key}: expected a number from {_number(low)} to {_number(high)}, got {shown(value)}")
            return default
        if key in WHOLE and value != int(value):  # n_ctx: 2048.5 is not a context size
            self.add(f"{where}.{key}: expected a whole number, got {shown(value)}")
            return default
        return value

    def size(self, value: Any, where: str) -> int:
        try:
            return parse_size(value, where)
        except ConfigError as exc:
            self.add(str(exc))
            return 0


def _number(x: float) -> str:
    """A bound as a person writes it: 1,048,576 (not 1.04858e+06), 0.1."""
    return f"{int(x):,}" if x == int(x) else f"{x:g}"
