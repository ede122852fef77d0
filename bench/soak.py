"""Soak run: the demo's load on the real agent process, watched for leaks.

Starts the Modbus and OPC UA simulators, the sandbox API and a Mosquitto
broker on loopback, runs ``python -m agent run`` on the demo plant's
configuration (five assets, a waveform every 3 s per vibration sensor, the
scalar points every second), and every ``--every`` seconds samples the agent
process's resident memory, open file descriptors and threads (from
``/proc``) and the outbox (queued items, file size with its WAL).

Writes ``soak.csv`` and ``soak.png`` to ``--out`` and prints, per series,
the slope of a least-squares line over the second half of the run (after
warm-up) and whether it is flat: below ``--max-slope`` per cent of the
series' median per minute.

Usage: ``.venv/bin/python bench/soak.py [--duration 600] [--out DIR]``
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import os
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

SERIES = ("rss_mib", "open_fds", "threads", "outbox_items", "outbox_file_kib")


def sample(pid: int, outbox: Path) -> dict[str, float]:
    """Read one sample of the agent process and its outbox."""
    status = Path(f"/proc/{pid}/status").read_text()
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    rss_kib = float(fields["VmRSS"].split()[0])
    threads = float(fields["Threads"].strip())
    fds = float(len(os.listdir(f"/proc/{pid}/fd")))
    conn = sqlite3.connect(f"file:{outbox}?mode=ro", uri=True, timeout=10)
    try:
        items = float(conn.execute("SELECT count(*) FROM items").fetchone()[0])
    finally:
        conn.close()
    size = sum(
        p.stat().st_size
        for p in (outbox, outbox.with_name(outbox.name + "-wal"))
        if p.exists()
    )
    return {
        "rss_mib": rss_kib / 1024,
        "open_fds": fds,
        "threads": threads,
        "outbox_items": items,
        "outbox_file_kib": size / 1024,
    }


def flatness(
    times_s: list[float], values: list[float], max_slope_pct: float
) -> tuple[float, bool]:
    """Return the slope per minute over the second half and whether it is flat."""
    half = len(times_s) // 2
    t = np.asarray(times_s[half:]) / 60.0
    v = np.asarray(values[half:])
    if len(t) < 3:
        return 0.0, True
    slope = float(np.polyfit(t, v, 1)[0])
    # A queue that fills and drains has a median near zero, so its peak
    # sets the scale too.
    scale = max(float(np.median(np.abs(v))), float(np.max(np.abs(v))) / 2, 1.0)
    return slope, abs(slope) <= max_slope_pct / 100.0 * scale


def plot(rows: list[dict[str, float]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = [r["t_s"] / 60.0 for r in rows]
    figure, axes = plt.subplots(len(SERIES), 1, figsize=(8, 10), sharex=True)
    for axis, name in zip(axes, SERIES, strict=True):
        axis.plot(t, [r[name] for r in rows])
        axis.set_ylabel(name)
        axis.grid(True, alpha=0.3)
    axes[-1].set_xlabel("minutes since start")
    figure.suptitle("cmagent soak run")
    figure.tight_layout()
    figure.savefig(path, dpi=90)


async def soak(duration_s: float, every_s: float, out: Path) -> list[dict[str, float]]:
    from tests.faults.conftest import FaultPlant
    from tests.mosquitto import MosquittoBroker

    rows: list[dict[str, float]] = []
    with tempfile.TemporaryDirectory(prefix="cmagent-soak-") as scratch:
        state_dir = Path(scratch) / "state"
        state_dir.mkdir()
        with MosquittoBroker(Path(scratch) / "broker") as broker:
            plant = FaultPlant(state_dir, broker)
            await plant.start_services()
            try:
                # No audit table: its growth would hide the outbox's own.
                plant.audit = False
                plant.write_config()
                await plant.start_agent()
                assert plant.agent.process is not None
                pid = plant.agent.process.pid
                started = time.monotonic()
                while (elapsed := time.monotonic() - started) < duration_s:
                    rows.append({"t_s": elapsed, **sample(pid, plant.outbox_path)})
                    await asyncio.sleep(every_s)
                await plant.agent.stop()
                stored = plant.stored()
                print(
                    f"measurements stored {len(stored)}, duplicated"
                    f" {sum(n - 1 for n in stored.values())}, still queued"
                    f" {plant.outbox_counts()['pending']}"
                )
            finally:
                await plant.stop_services()
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=600.0, help="seconds")
    parser.add_argument("--every", type=float, default=5.0, help="sample period, s")
    parser.add_argument("--out", type=Path, default=Path("soak-out"))
    parser.add_argument(
        "--max-slope",
        type=float,
        default=2.0,
        help="flat below this per cent of the median per minute",
    )
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)

    rows = asyncio.run(soak(args.duration, args.every, args.out))
    with (args.out / "soak.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["t_s", *SERIES])
        writer.writeheader()
        writer.writerows(rows)
    plot(rows, args.out / "soak.png")

    times = [r["t_s"] for r in rows]
    all_flat = True
    for name in SERIES:
        values = [r[name] for r in rows]
        slope, flat = flatness(times, values, args.max_slope)
        all_flat &= flat
        print(
            f"{name:16s} first {values[0]:9.1f} last {values[-1]:9.1f}"
            f" slope {slope:+8.3f}/min  {'flat' if flat else 'GROWING'}"
        )
    print(f"wrote {args.out / 'soak.csv'} and {args.out / 'soak.png'}")
    return 0 if all_flat else 1


if __name__ == "__main__":
    sys.exit(main())
