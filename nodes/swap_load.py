"""swap_load: make the routed expert resident, unloading others to stay within the budget."""

from __future__ import annotations

import contextvars
import threading
import time
from typing import Any

from langgraph.config import get_stream_writer
from langgraph.runtime import Runtime

from ech0_moe.graph.context import Context
from ech0_moe.graph.state import State
from ech0_moe.nodes._common import run_services, timed
from ech0_moe.services import ServiceProvider

HEARTBEAT_S = 2.0


@timed("swap_load")
def swap_load(state: State, runtime: Runtime[Context], services: ServiceProvider) -> dict[str, Any]:
    """Load the expert if it is not resident; record whether that was a swap and its cost.
    Progress: `loading` (bytes; again every 2 s while a long load runs) and `loaded`."""
    pool = run_services(runtime, services).pool
    expert = state.expert_used
    write = get_stream_writer()
    if pool.is_loaded(expert):  # the usual case: no load, no heartbeat thread
        acquired = pool.ensure_loaded(expert)
    else:
        write({"event": "loading", "expert": expert, "bytes": pool.expected_bytes(expert), "elapsed": 0.0})
        done = threading.Event()
        t0 = time.perf_counter()

        def heartbeat() -> None:
            while not done.wait(HEARTBEAT_S):
                write({"event": "loading", "expert": expert, "elapsed": round(time.perf_counter() - t0, 1)})

        # in this run's context: the stream writer finds the run's config through context variables
        beat = threading.Thread(target=contextvars.copy_context().run, args=(heartbeat,), daemon=True)
        beat.start()
        try:
            acquired = pool.ensure_loaded(expert)
        finally:
            done.set()
            beat.join()
    write(
        {
            "event": "loaded",
            "expert": expert,
            "swapped": acquired.swapped,
            "seconds": round(acquired.load_seconds, 4),
            "evicted": list(acquired.evicted),
        }
    )
    return {
        "swapped": acquired.swapped,
        "load_seconds": round(acquired.load_seconds, 4),
        "served_by": acquired.served_by,
    }
