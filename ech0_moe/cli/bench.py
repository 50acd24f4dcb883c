"""`ech0-moe bench NAME [options]`: one benchmark of the registry (`ech0_moe.bench.registry.BENCHMARKS`),
parsed by its own options; the last line printed is one JSON object."""

from __future__ import annotations

import argparse
import json
import sys
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
    if not options.json:
        for key, value in result.items():
            print(f"{key}: {value}", file=sys.stderr)
    print(json.dumps(result))
    return 0


def add_commands(command: Callable[[str, str], argparse.ArgumentParser]) -> None:
    p = command("bench", "run a benchmark: `ech0-moe bench NAME --help` shows its options")
    p.add_argument("name", metavar="NAME", help="which benchmark (an unknown name lists them)")
    p.add_argument("options", nargs=argparse.REMAINDER, help="the benchmark's own options")
    p.set_defaults(func=cmd_bench)
