"""The `ech0-moe` parser: the global options, then each command group's own commands."""

from __future__ import annotations

import argparse

from ech0_moe.cli import answer, bench, kb, pool
from ech0_moe.cli.common import Parser, global_options


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="ech0-moe", description="Many experts, one loaded at a time.")
    global_options(parser, in_subcommand=False)
    common = Parser(add_help=False)
    global_options(common, in_subcommand=True)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, parents=[common], help=help_text, description=help_text)

    for group in (answer, pool, kb, bench):
        group.add_commands(command)
    return parser
