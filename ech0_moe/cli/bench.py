"""`ech0-moe bench NAME [options]`: one benchmark of the registry (`ech0_moe.bench.registry.BENCHMARKS`),
parsed by its own options; the last line printed is one JSON object."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable

from ech0_moe.cli.common import Parser, global_options
from ech0_moe.errors import Ech0Error

GLOBAL = ("experts_file", "kb_dir", "json")


def cmd_bench(args: argparse.Namespace) -> int:
    from ech0_moe.bench.registry import BENCHMARKS

    if args.name not in BENCHMARKS:
        raise Ech0Error(f"unknown benchmark {args.name!r}; use {', '.join(BENCHMARKS)}")
    add_arguments, run = BENCHMARKS[args.name]
    parser = Parser(prog=f"ech0-moe bench {args.name}", description=(run.__doc__ or "").strip())
    global_options(parser, in_subcommand=True)
    add_arguments(parser)
    options = parser.parse_args(args.options)
    for key in GLOBAL:  # given before the benchmark's name
        if not hasattr(options, key):
            setattr(options, key, getattr(args, key, None))
    result = run(options)
    print(json.dumps(result) if options.json else "\n".join(readable(result)))
    return 0


def readable(value: object, key: str = "") -> list[str]:
    """A benchmark's result as `path.to.key: value` lines (lists of records: one line each)."""
    if isinstance(value, dict) and value:
        return [line for k, v in value.items() for line in readable(v, f"{key}.{k}" if key else str(k))]
    if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        return [line for i, v in enumerate(value) for line in readable(v, f"{key}[{i}]")]
    return [f"{key}: {json.dumps(value) if isinstance(value, list | dict) else value}"]


def add_commands(command: Callable[[str, str], argparse.ArgumentParser]) -> None:
    p = command("bench", "run a benchmark: `ech0-moe bench NAME --help` shows its options")
    p.add_argument("name", metavar="NAME", help="which benchmark (an unknown name lists them)")
    p.add_argument("options", nargs=argparse.REMAINDER, help="the benchmark's own options")
    p.set_defaults(func=cmd_bench)
