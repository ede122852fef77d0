"""``cmagent run``: the service.

Exit status 78 (``EX_CONFIG``) on an invalid configuration, 1 when the
outbox cannot be opened, 0 after a clean stop on SIGTERM or SIGINT.
SIGHUP reloads the configuration and the uplink token; a new configuration
that is invalid is logged and the running one stays.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path
from typing import Any, Final

logger = logging.getLogger(__name__)

FLUSH_TIMEOUT_S: Final = 10.0
STATUS_NOTIFY_S: Final = 10.0


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "run",
        help="run the agent (the systemd service)",
        description="Poll the configured devices, analyse, judge health and "
        "deliver results until SIGTERM.",
    )
    parser.add_argument(
        "--config", type=Path, required=True, help="configuration file (TOML)"
    )
    parser.set_defaults(handler=run_command)


def run_command(args: argparse.Namespace) -> int:
    from agent.errors import ConfigError
    from agent.pipeline_runtime import load_config
    from agent.service import EXIT_CONFIG_ERROR

    try:
        config = load_config(args.config)
    except ConfigError as exc:
        for line in exc.problems:
            print(line, file=sys.stderr)
        print(f"cmagent run: {exc}", file=sys.stderr)
        return EXIT_CONFIG_ERROR
    setup_logging(config.settings)
    return asyncio.run(serve(args.config, config))


def setup_logging(settings: Any) -> None:
    """Configure logging from ``[logging]``."""
    from agent.logging_setup import setup_logging as configure

    configure(settings.logging)


async def serve(path: Path, config: Any) -> int:
    """Run the agent until SIGTERM or SIGINT; return the exit status."""
    from agent.errors import ConfigError, OutboxError
    from agent.pipeline_runtime import AgentRuntime, load_config
    from agent.service import (
        ProgressTracker,
        SystemdNotifier,
        Watchdog,
        install_signal_handlers,
        watchdog_interval_s,
    )

    loop = asyncio.get_running_loop()
    notifier = SystemdNotifier()
    tracker = ProgressTracker()
    stop = asyncio.Event()
    reloads: asyncio.Queue[None] = asyncio.Queue()
    runtime = AgentRuntime(
        config, beats=tracker, on_reload_request=lambda: reloads.put_nowait(None)
    )
    install_signal_handlers(
        loop, on_term=stop.set, on_hup=lambda: reloads.put_nowait(None)
    )

    try:
        await runtime.start()
    except (OutboxError, ConfigError) as exc:
        logger.error("agent.start_failed", extra={"cause": str(exc)})
        await runtime.stop(flush_timeout_s=0)
        return 1
    notifier.ready(runtime.progress_summary())

    tasks = [asyncio.create_task(_notify_status(notifier, runtime, stop))]
    interval_s = watchdog_interval_s()
    if interval_s is not None:
        max_age_s = _max_progress_age_s(config.settings)
        watchdog = Watchdog(
            notifier,
            interval_s=interval_s,
            progress=lambda: tracker.all_alive(max_age_s),
            stale=lambda: tracker.stale(max_age_s),
        )
        tasks.append(asyncio.create_task(watchdog.run(stop)))

    async def reload_forever() -> None:
        while True:
            await reloads.get()
            notifier.reloading()
            try:
                new = await asyncio.to_thread(load_config, path)
            except ConfigError as exc:
                for line in exc.problems:
                    logger.error("agent.reload_rejected", extra={"problem": line})
                logger.warning(
                    "agent.reload_kept_old_config", extra={"path": str(path)}
                )
            else:
                await runtime.reload(new)
            notifier.ready(runtime.progress_summary())

    reloader = asyncio.create_task(reload_forever())
    await stop.wait()

    notifier.stopping()
    notifier.status("stopping: flushing the outbox")
    reloader.cancel()
    await runtime.stop(flush_timeout_s=FLUSH_TIMEOUT_S)
    for task in tasks:
        task.cancel()
    await asyncio.gather(reloader, *tasks, return_exceptions=True)
    return 0


async def _notify_status(notifier: Any, runtime: Any, stop: asyncio.Event) -> None:
    while not stop.is_set():
        await asyncio.sleep(STATUS_NOTIFY_S)
        notifier.status(runtime.progress_summary())


def _max_progress_age_s(settings: Any) -> float:
    """Return how long a device task may go without a poll beat.

    Three poll intervals of the slowest device plus the driver's own
    request timeouts, which a poll may spend before it fails.
    """
    polls = [d.poll_interval for d in settings.devices.values()] or [1.0]
    return 3 * max(polls) + 30.0
