"""``cmagent sandbox-api``: serve the sandbox integration API on its own."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
from pathlib import Path
from typing import Any


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Add the ``sandbox-api`` command."""
    parser = subparsers.add_parser(
        "sandbox-api",
        help="serve the sandbox integration API until Ctrl-C",
        description=(
            "Serve a local integration API with the same contract as the"
            " real one, storing everything in SQLite. Without --token-file a"
            " token is generated and written to <state-dir>/sandbox-token"
            " (mode 0600); its path is printed, never the token."
        ),
    )
    parser.add_argument(
        "--host", default="127.0.0.1", help="listen address (127.0.0.1)"
    )
    parser.add_argument(
        "--port", type=int, default=8700, help="TCP port, 0 for any free one (8700)"
    )
    parser.add_argument(
        "--token-file", type=Path, help="file holding the accepted token (0600)"
    )
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=Path("sandbox-state"),
        help="directory for the database and a generated token (sandbox-state)",
    )
    parser.add_argument(
        "--db", type=Path, help="SQLite database (default <state-dir>/sandbox.db)"
    )
    parser.add_argument(
        "--seed-assets",
        type=int,
        default=1200,
        help="number of PUMP-nnnn assets to create (1200)",
    )
    parser.add_argument(
        "--tag",
        action="append",
        default=[],
        help="also create an asset with this tag; repeat for more",
    )
    parser.set_defaults(handler=serve)


def serve(args: argparse.Namespace) -> int:
    """Serve until SIGINT or SIGTERM; return the exit status."""
    from agent.errors import ConfigError
    from agent.uplink.token import load_secret, write_secret_file

    args.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        if args.token_file is not None:
            loaded = load_secret("sandbox-token", "", args.token_file, environ={})
            assert loaded is not None
            token = loaded.value.get_secret_value()
            token_path = args.token_file
        else:
            import secrets

            token = secrets.token_urlsafe(32)
            token_path = args.state_dir / "sandbox-token"
            write_secret_file(token_path, token)
    except ConfigError as exc:
        print(f"cmagent sandbox-api: {exc}", file=sys.stderr)
        return 1
    return asyncio.run(_serve(args, token, token_path))


async def _serve(args: argparse.Namespace, token: str, token_path: Path) -> int:
    from agent.uplink.sandbox import SandboxApi

    sandbox = SandboxApi(
        args.db or args.state_dir / "sandbox.db",
        tokens=token,
        seed_assets=args.seed_assets,
        seed_tags=args.tag,
    )
    try:
        await sandbox.start(args.host, args.port)
    except OSError as exc:
        print(
            f"cmagent sandbox-api: cannot listen on {args.host}:{args.port}:"
            f" {exc.strerror}",
            file=sys.stderr,
        )
        await sandbox.stop()
        return 1

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    print(
        f"sandbox API on http://{args.host}:{sandbox.port}; token in"
        f" {os.fspath(token_path)}; Ctrl-C stops it",
        flush=True,
    )
    with contextlib.suppress(asyncio.CancelledError):
        await stop.wait()
    await sandbox.stop()
    return 0
