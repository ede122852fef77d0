"""``cmagent token set``: store the uplink token for the service."""

from __future__ import annotations

import argparse
import getpass
import sys
from pathlib import Path
from typing import Any

ENCRYPT_COMMAND = (
    "systemd-creds encrypt --name=uplink-token - /etc/credstore.encrypted/uplink-token"
)


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Add the ``token`` command and its ``set`` action."""
    parser = subparsers.add_parser(
        "token",
        help="store the integration API token",
        description="Manage the token the agent sends to the integration API.",
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    setter = actions.add_parser(
        "set",
        help="read the token from standard input and store it (mode 0600)",
        description=(
            "Read the token from standard input (without echo on a terminal)"
            " and write it atomically to a file with mode 0600. The file is"
            " the active endpoint's token_file, else <state_dir>/uplink-token."
        ),
    )
    setter.add_argument(
        "--file", type=Path, help="token file to write (overrides the settings)"
    )
    setter.add_argument(
        "--config", type=Path, help="configuration file that names the token file"
    )
    setter.set_defaults(handler=set_token)


def default_token_file(config: Path | None) -> Path:
    """Return the active endpoint's token file, else the state dir's."""
    from agent.settings import load_settings

    settings = load_settings(config)
    endpoint = getattr(settings.uplink, settings.uplink.environment)
    if endpoint.token_file is not None:
        return Path(endpoint.token_file)
    return settings.gateway.state_dir / "uplink-token"


def set_token(args: argparse.Namespace) -> int:
    """Read the token and store it; return the exit status."""
    from agent.errors import ConfigError
    from agent.uplink.token import write_secret_file

    try:
        path: Path = args.file or default_token_file(args.config)
    except ConfigError as exc:
        print(f"cmagent token set: {exc}", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return 1

    if sys.stdin.isatty():
        token = getpass.getpass("Uplink token (not echoed): ")
    else:
        token = sys.stdin.read()
    try:
        write_secret_file(path, token)
    except ConfigError as exc:
        print(f"cmagent token set: {exc}", file=sys.stderr)
        return 1

    print(f"Stored the uplink token in {path} (mode 0600).")
    print(
        "A running agent re-reads a token file on `systemctl reload cmagent`"
        " (SIGHUP) and after a 401; a systemd credential is read only at"
        " start, so after changing one run `systemctl restart cmagent`."
    )
    print("To keep it as an encrypted systemd credential instead, run:")
    print(f"  {ENCRYPT_COMMAND}")
    print("and pipe the token into it the same way.")
    return 0
