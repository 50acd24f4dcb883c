"""`ech0-moe`: ask, inspect the pool, route, run the demo and the benchmarks.

Every user-fixable problem ends in one line on stderr (``ech0-moe: error: ...``)
and exit status 2; set ECH0_DEBUG=1 to see a traceback instead. One module per command
group (`answer`, `pool`, `kb`, `bench`); `parser` puts them together.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence

from ech0_moe.cli.parser import build_parser
from ech0_moe.errors import Ech0Error

__all__ = ["build_parser", "main"]


def _quiet_libraries() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")


def main(argv: Sequence[str] | None = None) -> int:
    _quiet_libraries()
    args = build_parser().parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        code = func(args)
        sys.stdout.flush()
        return code
    except BrokenPipeError:  # e.g. `ech0-moe kb search ... | head`: the reader left, end quietly
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141
    except Ech0Error as exc:
        print(f"ech0-moe: error: {_line(str(exc))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("ech0-moe: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # last line of defence: one sentence, no traceback
        if os.environ.get("ECH0_DEBUG"):
            raise
        detail = (str(exc).strip().splitlines() or ["no details"])[0]
        print(f"ech0-moe: error: unexpected failure ({detail}); ECH0_DEBUG=1 shows where", file=sys.stderr)
        return 1


def _line(message: str, limit: int = 600) -> str:
    """An error as one line of at most `limit` characters, whatever a message quoted."""
    message = " ".join(message.split())
    return message if len(message) <= limit else message[: limit - 3] + "..."
