"""End-to-end load: acquisition to delivery through the whole agent.

10 assets, each sending a 65 536-sample waveform every 10 s and 20 scalar
points every second (200 readings a second in all), through the real pipeline, health,
outbox and uplink into the sandbox API on loopback. The devices are
configured as OPC UA servers but served by in-process replay drivers that
return the shipped 12 kHz recordings, so the figures measure the agent,
not a protocol (``bench/polling.py`` covers Modbus). MQTT is disabled.
The sandbox API runs in the same process, so its CPU time is counted too.

Reported: acquisition-to-delivery latency of measurements (p50, p99, from
the reading's timestamp to the uplink's acknowledgement), CPU share of one
core, peak RSS, readings lost (produced minus delivered after the final
flush) and waveforms dropped. The baseline, timed in the same run, is
``dsp.analyse`` alone on a waveform of the same length:
``cpu_ratio_to_analysis`` is the process's CPU time over the analysis CPU
time of the waveforms it analysed.

Usage: ``.venv/bin/python bench/e2e.py [--duration 60] [--json]``
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import secrets
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

# Run as a script, this directory comes first on sys.path, where
# bench/dsp.py would hide the dsp package: put the repository first.
_BENCH_DIR = Path(__file__).resolve().parent
sys.path[:] = [str(_BENCH_DIR.parent)] + [
    p for p in sys.path if Path(p or ".").resolve() != _BENCH_DIR
]

from agent.pipeline_runtime import AgentRuntime, load_config  # noqa: E402
from agent.uplink.sandbox import SandboxApi  # noqa: E402
from agent.uplink.token import write_secret_file  # noqa: E402
from drivers.base import Reading, Waveform  # noqa: E402
from drivers.sim.recordings import load_recording  # noqa: E402
from drivers.spec import DeviceSpec  # noqa: E402

ASSETS = 10
SAMPLES = 65_536
POINTS_PER_ASSET = 20
RECORDINGS = ("normal_97", "outer_race_021_234", "inner_race_021_209")


class ReplayDriver:
    """A device in this process: 20 points and one 12 kHz waveform."""

    def __init__(self, spec: DeviceSpec) -> None:
        self.device_id = spec.device_id
        self.spec = spec
        index = int(spec.device_id.removeprefix("dev"))
        name = ("outer_race_021_234", "inner_race_021_209", "inner_race_007_105")[
            index % 3
        ]
        recording = load_recording(name)
        self._samples = np.asarray(recording.samples, dtype=np.float64)
        self._fs_hz = recording.fs_hz
        self._rpm = recording.rpm
        self._offset = index * 997

    async def connect(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def read_points(self) -> list[Reading]:
        now = datetime.now(UTC)
        return [
            Reading(
                asset=point.asset,
                point=point.name,
                timestamp=now,
                value=self._rpm if point.name == "speed" else 41.5 + i / 10,
                unit=point.unit,
                source=self.device_id,
            )
            for i, point in enumerate(self.spec.points)
        ]

    async def read_waveform(self, name: str) -> Waveform:
        start = self._offset % (self._samples.size - SAMPLES)
        self._offset += 12_345
        return Waveform(
            asset=self.spec.points[0].asset,
            point=name,
            timestamp=datetime.now(UTC),
            fs_hz=self._fs_hz,
            samples=self._samples[start : start + SAMPLES].copy(),
            rpm=self._rpm,
            source=self.device_id,
        )


def extra_points(device: int) -> str:
    """The TOML of every point but ``speed``: temperatures in °C."""
    return "\n".join(
        f"[devices.dev{device}.points.temperature_{n:02d}]\n"
        f'node_id = "nsu=urn:bench;s=Temperature{device}_{n}"\n'
        'unit = "°C"\n'
        for n in range(1, POINTS_PER_ASSET)
    )


def config_text(state_dir: Path, base_url: str, token_file: Path) -> str:
    parts = [
        f"""[gateway]
id = "bench"
state_dir = "{state_dir}"

[mqtt]
enabled = false

[uplink]
max_requests_per_s = 50.0

[uplink.sandbox]
base_url = "{base_url}"
token_file = "{token_file}"
"""
    ]
    for i in range(ASSETS):
        parts.append(
            f"""[assets.asset{i}]
bearing = "6205"
remote_tag = "BENCH-{i:02d}"

[devices.dev{i}]
driver = "opcua"
endpoint = "opc.tcp://127.0.0.1:4840"
asset = "asset{i}"
poll_interval = "1s"
waveform_interval = "10s"

[devices.dev{i}.points.speed]
node_id = "nsu=urn:bench;s=Speed{i}"
unit = "rpm"

{extra_points(i)}
[devices.dev{i}.waveforms.accel]
samples = {{ node_id = "nsu=urn:bench;s=Waveform{i}" }}
sample_rate = {{ node_id = "nsu=urn:bench;s=SampleRate{i}" }}
"""
        )
    return "\n".join(parts)


def instrument(runtime: AgentRuntime, latencies: list[float]) -> None:
    """Record the age of every measurement when the uplink acknowledges it."""
    outbox = runtime.outbox
    assert outbox is not None
    lease, ack = outbox.lease, outbox.ack
    stamps: dict[int, float] = {}

    def timed_lease(kind: str, limit: int, lease_s: float = 60) -> list[Any]:
        items = lease(kind, limit, lease_s)
        for item in items:
            if item.kind == "measurement":
                ts = datetime.fromisoformat(item.payload["timestamp"])
                stamps[item.id] = ts.timestamp()
        return items

    def timed_ack(ids: Sequence[int]) -> None:
        ack(ids)
        now = time.time()
        latencies.extend(now - stamps.pop(i) for i in ids if i in stamps)

    outbox.lease = timed_lease  # type: ignore[method-assign]
    outbox.ack = timed_ack  # type: ignore[method-assign]


def analysis_cpu_s(count: int) -> float:
    """CPU seconds ``dsp.analyse`` alone needs for ``count`` bench waveforms:
    the median of 30 timed runs, after 3 untimed ones, times ``count``."""
    import dsp

    recording = load_recording("outer_race_021_234")
    samples = np.asarray(recording.samples[:SAMPLES], dtype=np.float64)
    machine = dsp.MachineInfo(bearing=dsp.bearing_by_model("6205"))
    times = []
    for i in range(33):
        started = time.process_time()
        dsp.analyse(
            samples, fs_hz=recording.fs_hz, rpm=recording.rpm, machine=machine, unit="g"
        )
        if i >= 3:
            times.append(time.process_time() - started)
    return statistics.median(times) * count


async def run(duration_s: float) -> dict[str, Any]:
    token = secrets.token_urlsafe(24)
    with tempfile.TemporaryDirectory(prefix="cmagent-bench-") as directory:
        state_dir = Path(directory)
        token_file = state_dir / "uplink-token"
        write_secret_file(token_file, token)
        api = SandboxApi(state_dir / "sandbox.db", tokens=token, seed_assets=0)
        api.add_assets([f"BENCH-{i:02d}" for i in range(ASSETS)])
        await api.start("127.0.0.1", 0)
        path = state_dir / "agent.toml"
        path.write_text(config_text(state_dir, api.base_url, token_file))

        runtime = AgentRuntime(
            load_config(path, environ={}), environ={}, driver_factory=ReplayDriver
        )
        latencies: list[float] = []
        cpu_before = time.process_time()
        wall_before = time.monotonic()
        await runtime.start()
        instrument(runtime, latencies)
        await asyncio.sleep(duration_s)
        await runtime.stop(flush_timeout_s=30)
        cpu_s = time.process_time() - cpu_before
        wall_s = time.monotonic() - wall_before
        await api.stop()

    assert runtime.pipeline is not None
    counters = runtime.pipeline.counters
    delivered = (
        runtime.uplink.delivered_by_kind.get("measurement", 0) if runtime.uplink else 0
    )
    baseline_s = analysis_cpu_s(max(1, counters.waveforms_analysed))
    latencies.sort()
    return {
        "duration_s": round(wall_s, 1),
        "waveforms_analysed": counters.waveforms_analysed,
        "waveforms_dropped": counters.waveforms_dropped,
        "measurements_produced": counters.measurements_produced,
        "measurements_delivered": delivered,
        "readings_lost": counters.measurements_produced - delivered,
        "latency_p50_s": round(statistics.median(latencies), 3) if latencies else None,
        "latency_p99_s": round(latencies[int(0.99 * (len(latencies) - 1))], 3)
        if latencies
        else None,
        "cpu_share": round(cpu_s / wall_s, 3),
        "analysis_cpu_ms": round(
            1000 * baseline_s / max(1, counters.waveforms_analysed), 2
        ),
        "cpu_ratio_to_analysis": round(cpu_s / baseline_s, 2),
        "peak_rss_mb": round(
            resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1
        ),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=60.0, help="seconds")
    parser.add_argument("--json", action="store_true", help="print JSON")
    args = parser.parse_args()
    result = asyncio.run(run(args.duration))
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for key, value in result.items():
            print(f"{key:<24} {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
