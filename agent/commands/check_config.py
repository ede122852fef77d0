"""``cmagent check-config PATH``: validate a configuration and its profiles."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any


def register(subparsers: Any) -> None:
    """Add the ``check-config`` sub-command."""
    parser = subparsers.add_parser(
        "check-config",
        help="validate a configuration file and its device profiles",
        description=(
            "Validate a configuration file, every device profile it uses and "
            "the CMAGENT_ environment variables. Prints every problem as "
            "FILE:LINE: key.path: message and exits 1 if there is any, else "
            "prints a summary and exits 0."
        ),
    )
    parser.add_argument("path", type=Path, help="configuration file (TOML)")
    parser.set_defaults(handler=run)


def _secret_values() -> list[str]:
    names = ("CMAGENT_UPLINK__TOKEN", "CMAGENT_MQTT__PASSWORD")
    return [
        value for name, value in os.environ.items() if name.upper() in names and value
    ]


def run(args: argparse.Namespace) -> int:
    """Print the report for ``args.path``; return 0 when valid, else 1."""
    from agent.config_check import inspect_config

    report = inspect_config(args.path)
    secrets = _secret_values()
    lines = [f"warning: {text}" for text in report.warnings]
    lines += [str(note) for note in report.notes]
    lines += [str(problem) for problem in report.problems]
    if report.ok and report.settings is not None and not report.settings.devices:
        lines.append(
            f"warning: {args.path}: no devices configured, so the agent would "
            "poll nothing; add a [devices.<name>] table (see "
            "config/agent.example.toml)"
        )
    if report.ok:
        lines.append(report.summary())
    else:
        count = len(report.problems)
        lines.append(f"{count} problem{'' if count == 1 else 's'} found")

    for line in lines:
        # Secrets never reach a message; this also guards against one that
        # a future message might echo by mistake.
        for secret in secrets:
            line = line.replace(secret, "***")
        print(line)
    return 0 if report.ok else 1
