"""``cmagent demo``: the whole product on a simulated plant, no set-up."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from agent.broker import BrokerChoice

from agent.logging_setup import QUIET_LIBRARY_LEVEL

PLAIN_INTERVAL_S: Final = 5.0


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="run simulators, sandbox API, MQTT broker and the agent together",
        description="Replay real bearing recordings through simulated Modbus "
        "and OPC UA sensors into the agent, deliver to a local sandbox API and "
        "publish on MQTT, with a live view. Everything listens on 127.0.0.1.",
    )
    parser.add_argument(
        "--duration",
        type=float,
        default=60.0,
        metavar="S",
        help="seconds to run; 0 runs until Ctrl-C (default 60)",
    )
    parser.add_argument(
        "--no-ui", action="store_true", help="print plain lines, no live table"
    )
    parser.add_argument(
        "--summary", type=Path, metavar="PATH", help="write a JSON summary at exit"
    )
    parser.add_argument(
        "--mqtt",
        metavar="HOST:PORT",
        help="use this MQTT broker instead of starting one",
    )
    parser.add_argument(
        "--broker",
        choices=("auto", "mosquitto", "amqtt"),
        default="auto",
        help="which MQTT broker to start without --mqtt: auto uses Mosquitto "
        "when installed, else the embedded amqtt broker (default auto)",
    )
    parser.add_argument(
        "--state-dir",
        type=Path,
        metavar="DIR",
        help="keep the agent's state (outbox, status, baselines) in DIR, which "
        "must be empty or absent, so that `cmagent status --state-dir DIR` "
        "works after the demo; by default a temporary directory is removed",
    )
    parser.set_defaults(handler=demo_command)


def demo_command(args: argparse.Namespace) -> int:
    mqtt = None
    if args.mqtt is not None:
        host, _, port = args.mqtt.rpartition(":")
        if not host or not port.isdigit():
            print(
                f"cmagent demo: --mqtt expects HOST:PORT, found {args.mqtt!r}",
                file=sys.stderr,
            )
            return 2
        mqtt = (host, int(port))
    if args.duration < 0:
        print(
            f"cmagent demo: --duration expects 0 or more seconds, found "
            f"{args.duration!r}",
            file=sys.stderr,
        )
        return 2
    # Library chatter would tear the live table, and the drivers report
    # every vendor failure in their own words. The agent's warnings show.
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    for noisy in ("asyncua", "pymodbus", "amqtt"):
        logging.getLogger(noisy).setLevel(QUIET_LIBRARY_LEVEL)
    if args.state_dir is not None and _not_empty(args.state_dir):
        print(
            f"cmagent demo: --state-dir expects an empty or absent directory, "
            f"found {str(args.state_dir)!r} with files in it",
            file=sys.stderr,
        )
        return 2
    use_ui = not args.no_ui and sys.stdout.isatty()
    return asyncio.run(
        run_demo(
            args.duration,
            use_ui,
            args.summary,
            mqtt,
            args.state_dir,
            broker=args.broker,
        )
    )


def _not_empty(directory: Path) -> bool:
    return directory.exists() and (not directory.is_dir() or any(directory.iterdir()))


async def run_demo(
    duration_s: float,
    use_ui: bool,
    summary_path: Path | None,
    mqtt: tuple[str, int] | None,
    state_dir: Path | None = None,
    *,
    broker: BrokerChoice = "auto",
) -> int:
    """Run the demo plant for ``duration_s`` (0: until interrupted).

    ``state_dir`` keeps the agent's files after the run; None uses a
    temporary directory that is removed. ``broker`` chooses the broker to
    start when ``mqtt`` is None.
    """
    from agent.demo import DemoPlant
    from agent.demo_view import final_summary_text

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)

    with contextlib.ExitStack() as stack:
        if state_dir is None:
            directory = stack.enter_context(
                tempfile.TemporaryDirectory(prefix="cmagent-demo-")
            )
        else:
            state_dir.mkdir(parents=True, exist_ok=True)
            directory = str(state_dir.resolve())
        plant = DemoPlant(Path(directory), mqtt=mqtt, broker=broker)
        print(f"cmagent demo: starting in {directory}", file=sys.stderr)
        try:
            await plant.start()
        except Exception as exc:  # any part failing to start ends the demo
            print(f"cmagent demo: start-up failed: {exc}", file=sys.stderr)
            await plant.stop(flush_timeout_s=0)
            await plant.stop_services()
            return 1

        await _show(plant, duration_s, use_ui, stop)

        print("cmagent demo: stopping, flushing the outbox", file=sys.stderr)
        await plant.stop()
        delivered = await plant.read_back()
        summary = plant.summary(delivered)
        await plant.stop_services()

    if summary_path is not None:
        summary_path.write_text(json.dumps(summary, indent=2) + "\n")
    print(final_summary_text(summary))
    return 0


async def _show(
    plant: Any, duration_s: float, use_ui: bool, stop: asyncio.Event
) -> None:
    from agent.demo_view import print_plain, render_table

    started = time.monotonic()
    deadline = started + duration_s if duration_s > 0 else None

    def frame() -> tuple[dict[str, Any], int, float]:
        snapshot = plant.runtime.snapshot()
        return snapshot, plant.counter.total, time.monotonic() - started

    async def wait(seconds: float) -> None:
        if deadline is not None:
            seconds = min(seconds, max(0.0, deadline - time.monotonic()))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), seconds)

    def done() -> bool:
        over = deadline is not None and time.monotonic() >= deadline
        return stop.is_set() or over

    if use_ui:
        from rich.live import Live

        with Live(render_table(*frame()), refresh_per_second=2) as live:
            while not done():
                await wait(1.0)
                live.update(render_table(*frame()))
        return
    while not done():
        await wait(PLAIN_INTERVAL_S)
        print_plain(*frame(), out=sys.stdout)
