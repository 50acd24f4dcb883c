"""The command line's manners, without running a command: global options anywhere, help on every option."""

from __future__ import annotations

import argparse

import pytest

from ech0_moe.cli import build_parser


@pytest.mark.parametrize(
    "argv",
    [
        ["--json", "--experts", "x.yaml", "--kb", "kb", "route", "hi"],
        ["route", "hi", "--json", "--experts", "x.yaml", "--kb", "kb"],
        ["--experts", "x.yaml", "route", "--json", "hi", "--kb", "kb"],
    ],
)
def test_global_options_before_or_after_the_command(argv: list[str]) -> None:
    args = build_parser().parse_args(argv)
    assert (args.json, args.experts_file, args.kb_dir, args.question) == (True, "x.yaml", "kb", "hi")


def test_defaults_when_no_global_option_is_given() -> None:
    args = build_parser().parse_args(["route", "hi"])
    assert (args.json, args.experts_file, args.kb_dir) == (False, None, None)


def test_every_option_has_help_text() -> None:
    parser = build_parser()
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, sub in [("ech0-moe", parser), *subparsers.choices.items()]:
        for action in sub._actions:
            if isinstance(action, argparse._HelpAction | argparse._SubParsersAction):
                continue
            assert action.help, f"{name}: {action.dest} has no help text"
