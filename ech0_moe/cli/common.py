"""What every command shares: the parser that errs in one line, the global options, and the
run's context and pool read from the arguments."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ech0_moe.config import PoolConfig
    from ech0_moe.graph.context import Context


class Parser(argparse.ArgumentParser):
    """argparse, but a usage mistake is one line, like every other error."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def global_options(parser: argparse.ArgumentParser, *, in_subcommand: bool) -> None:
    """--experts, --kb and --json, accepted before or after the subcommand."""
    unset: Any = argparse.SUPPRESS if in_subcommand else None
    parser.add_argument(
        "--experts",
        dest="experts_file",
        metavar="FILE",
        default=unset,
        help="experts.yaml to use (default: ./experts.yaml, else the packaged example pool)",
    )
    parser.add_argument(
        "--kb", dest="kb_dir", metavar="DIR", default=unset, help="knowledge-base folder (default: ./.ech0/kb)"
    )
    parser.add_argument(
        "--user",
        metavar="NAME",
        default=unset,
        help="who is asking: what is learned is theirs; they read only theirs and shared documents (default: local)",
    )
    parser.add_argument("--json", action="store_true", default=unset if in_subcommand else False, help="print JSON")


def max_tokens_option(parser: argparse.ArgumentParser, default: int | None = None) -> None:
    parser.add_argument(
        "--max-tokens",
        dest="max_tokens",
        type=int,
        default=default,
        metavar="N",
        help="answer length cap in tokens (default: each expert's own max_tokens)",
    )


def context_of(args: argparse.Namespace) -> Context:
    """The run's `Context` from the command line (an out-of-range value is one error line)."""
    from ech0_moe.graph.context import Context

    return Context.of(**vars(args))


def config_of(args: argparse.Namespace) -> PoolConfig:
    """The pool the arguments name (`--experts`, else the default pool)."""
    from ech0_moe.config import load_pool

    return load_pool(context_of(args).experts_file)


def read_question(args: argparse.Namespace) -> str:
    """The question argument; `-` reads it from standard input (checked by the graph's `prepare`)."""
    return sys.stdin.read() if args.question == "-" else args.question
