"""The benchmarks' one registry: `BENCHMARKS = {name: (add_arguments, run)}`.

Each benchmark module adds its own options to a parser (`ech0-moe bench NAME --help` shows
only those) and `run(args)` returns one JSON-ready dict. A new benchmark is a module here and
one line below.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from ech0_moe.bench import compress, finish, ingest, injection, modes, rag, ray_serve, routing, startup, swap, vote

AddArguments = Callable[[argparse.ArgumentParser], None]
Run = Callable[[argparse.Namespace], dict[str, Any]]

BENCHMARKS: dict[str, tuple[AddArguments, Run]] = {
    "routing": (routing.add_arguments, routing.run),
    "compress": (compress.add_arguments, compress.run),
    "rag": (rag.add_arguments, rag.run),
    "ingest": (ingest.add_arguments, ingest.run),
    "swap": (swap.add_arguments, swap.run),
    "startup": (startup.add_arguments, startup.run),
    "modes": (modes.add_arguments, modes.run),
    "ray": (ray_serve.add_arguments, ray_serve.run),
    "vote": (vote.add_arguments, vote.run),
    "finish": (finish.add_arguments, finish.run),
    "injection": (injection.add_arguments, injection.run),
}
