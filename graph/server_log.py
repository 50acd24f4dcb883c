"""Under a LangGraph server: a rejected input is logged as its one line, not a traceback.

The server logs every failed run with its traceback through structlog. For an `InputError`
(an empty query, top_k=0) the traceback says nothing the client's one line does not, and it
buries real failures, so a structlog processor put ahead of the server's own drops it. Any other
exception keeps its traceback.
"""

from __future__ import annotations

import sys
from typing import Any

from ech0_moe.errors import InputError


def _one_line_for_rejected_input(logger: Any, method: str, event: dict[str, Any]) -> dict[str, Any]:
    info = event.get("exc_info")
    if info is True:
        info = sys.exc_info()
    error = info[1] if isinstance(info, tuple) else info
    if isinstance(error, InputError):
        event.pop("exc_info")
        event["event"] = f"rejected input: {error}"
    return event


def quiet_rejected_input() -> None:
    """Put the processor first in structlog's chain and in the server's chain for stdlib
    loggers (both lists are changed in place: loggers already made keep reading them)."""
    try:
        import structlog
        from langgraph_api import logging as server_logging  # only under `langgraph dev` / a server
    except ImportError:
        return
    for chain in (structlog.get_config()["processors"], server_logging.shared_processors):
        if isinstance(chain, list) and _one_line_for_rejected_input not in chain:
            chain.insert(0, _one_line_for_rejected_input)
