"""The ``cmagent`` command line."""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import sys
from collections.abc import Sequence

from agent import commands


def build_parser() -> argparse.ArgumentParser:
    """Build the parser with every sub-command found in ``agent.commands``."""
    parser = argparse.ArgumentParser(
        prog="cmagent",
        description="Condition-monitoring edge agent for plant machinery.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_info in sorted(
        pkgutil.iter_modules(commands.__path__), key=lambda m: m.name
    ):
        if module_info.name.startswith("_"):
            continue
        module = importlib.import_module(f"agent.commands.{module_info.name}")
        module.register(subparsers)
    return parser


EXIT_BROKEN_PIPE = 128 + 13
"""Exit status of a program ended by SIGPIPE, as shells report it."""


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``cmagent`` and return its exit status.

    Output piped into a program that stops reading early, such as
    ``cmagent status | head -3``, ends the command quietly.
    """
    try:
        try:
            return _run(argv)
        finally:
            # Output to a pipe is buffered: a reader that is gone shows up
            # only when the buffer is written.
            sys.stdout.flush()
    except BrokenPipeError:
        # Python flushes stdout again at exit; pointing it at /dev/null
        # keeps that flush from raising a second time.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_BROKEN_PIPE


def _run(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.print_help(sys.stderr)
        return 2
    status: int = handler(args)
    return status


if __name__ == "__main__":
    sys.exit(main())
