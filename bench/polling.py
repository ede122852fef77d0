"""Modbus polling throughput: the driver against a bare pymodbus loop.

Serves 10 unit ids of 100 float32 points each (1 000 points) from the
simulator on loopback, then times, in the same process and run:

* ``bare``: an AsyncModbusTcpClient reading the planner's blocks and
  decoding each point's float32 with ``struct.unpack_from``, but building
  no reading and checking nothing;
* ``driver``: ModbusDriver.read_points on the same blocks, decoded and
  checked into a ReadingBatch;
* ``driver_records``: the same, then building every Reading record of
  the batch, as a consumer that iterates the readings does;
* ``per_point``: ModbusDriver with one request per point.

``bare``, ``driver`` and ``driver_records`` run in alternating rounds.
Each overhead is given from each loop's best round, and as the median of
the paired rounds' overheads.

It also counts the requests the planner issues for the shipped profiles.
Run: ``.venv/bin/python bench/polling.py [--cycles N] [--json]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import struct
import time
import tomllib
from collections.abc import Sequence
from pathlib import Path

from pymodbus.client import AsyncModbusTcpClient
from pymodbus.pdu.register_message import ReadHoldingRegistersResponse

from drivers.base import Reading
from drivers.modbus import ModbusDriver
from drivers.modbus_link import ModbusLink
from drivers.planner import plan_reads
from drivers.sim.modbus_sensors import SimRegisterBank
from drivers.sim.modbus_server import ModbusSimulator
from drivers.spec import DataType, ModbusPointSpec, ModbusTcpSpec, RegisterTable

UNITS = range(1, 11)
POINTS_PER_UNIT = 100
SPACING = 3  # one unused register between float32 points
ROUNDS = 20
ROOT = Path(__file__).resolve().parents[1]


def points() -> tuple[ModbusPointSpec, ...]:
    return tuple(
        ModbusPointSpec(
            name=f"p{i}", asset="bench", address=SPACING * i,
            data_type=DataType.FLOAT32,
        )
        for i in range(POINTS_PER_UNIT)
    )  # fmt: skip


def drivers_for(port: int, max_gap: int) -> list[ModbusDriver]:
    return [
        ModbusDriver(
            ModbusTcpSpec(
                device_id=f"unit{unit}", host="127.0.0.1", port=port,
                unit_id=unit, retries=0, max_gap_registers=max_gap,
                points=points(),
            )
        )
        for unit in UNITS
    ]  # fmt: skip


async def time_drivers(
    drivers: list[ModbusDriver], cycles: int, *, records: bool = False
) -> float:
    """Return readings per second; with ``records``, build every Reading."""
    for driver in drivers:
        await driver.connect()
    count = 0
    last: Sequence[Reading] = []
    started = time.perf_counter()
    for _ in range(cycles):
        for driver in drivers:
            last = await driver.read_points()
            if records:
                last = list(last)
            count += len(last)
    elapsed = time.perf_counter() - started
    for driver in drivers:
        await driver.close()
    # Checked after the clock stops, as the bare loop checks nothing. A
    # failed request would have set last_error.
    assert all(driver.last_error is None for driver in drivers)
    assert all(r.quality.is_good for r in last)
    return count / elapsed


async def time_bare(port: int, cycles: int) -> float:
    client = AsyncModbusTcpClient("127.0.0.1", port=port, retries=0, reconnect_delay=0)
    await client.connect()
    try:
        return await bare_loop(client, cycles)
    finally:
        client.close()


async def bare_loop(client: AsyncModbusTcpClient | CannedClient, cycles: int) -> float:
    """Return the bare loop's readings per second on a connected client."""
    blocks = plan_reads(points(), max_gap=10)
    # Byte offset of each float32 in its block, for struct.unpack_from.
    offsets = [[2 * (p.address - b.address) for p in b.points] for b in blocks]
    count = 0
    started = time.perf_counter()
    for _ in range(cycles):
        for unit in UNITS:
            for block, block_offsets in zip(blocks, offsets, strict=True):
                response = await client.read_holding_registers(
                    block.address, count=block.count, device_id=unit
                )
                assert not response.isError()
                registers = response.registers
                packed = struct.pack(f">{len(registers)}H", *registers)
                values = [struct.unpack_from(">f", packed, o)[0] for o in block_offsets]
                count += len(values)
    return count / (time.perf_counter() - started)


class CannedClient:
    """A stand-in for the pymodbus client that returns a prepared response
    to every read at once, so only the caller's own work is timed."""

    connected = True

    def __init__(self) -> None:
        self._responses: dict[tuple[int, int], ReadHoldingRegistersResponse] = {}

    async def read_holding_registers(
        self, address: int, *, count: int, device_id: int
    ) -> ReadHoldingRegistersResponse:
        key = (address, count)
        if key not in self._responses:
            # As in the simulator's bank, register ``a`` contains ``a``.
            registers = list(range(address, address + count))
            self._responses[key] = ReadHoldingRegistersResponse(registers=registers)
        return self._responses[key]


async def own_work_us(cycles: int) -> dict[str, float]:
    """Return µs per request of the driver's and the bare loop's own work.

    Both run against :class:`CannedClient`, so pymodbus, the socket and
    the simulator are left out. Best of 5 alternating rounds.
    """
    driver = drivers_for(0, 10)[0]
    # The driver is never connected: its link is replaced by one whose
    # client responds in-process.
    driver._link = ModbusLink(CannedClient(), endpoint="canned")  # type: ignore[arg-type]
    requests = len(driver.requests)
    bare_rates: list[float] = []
    driver_rates: list[float] = []
    for _ in range(5):
        bare_rates.append(await bare_loop(CannedClient(), cycles))
        started = time.perf_counter()
        for _ in range(cycles * len(UNITS)):
            await driver.read_points()
        elapsed = time.perf_counter() - started
        driver_rates.append(cycles * len(UNITS) * requests / elapsed)
    per_request = POINTS_PER_UNIT / requests  # readings per request
    return {
        "bare": 1e6 * per_request / max(bare_rates),
        "driver": 1e6 / max(driver_rates),
    }


def profile_requests() -> dict[str, tuple[int, int]]:
    """Return (points, planned requests) per shipped Modbus profile."""
    result = {}
    for path in sorted((ROOT / "config" / "devices").glob("*modbus*.toml")):
        data = tomllib.loads(path.read_text(encoding="utf-8"))
        specs = [
            ModbusPointSpec(
                name=name, asset="a", table=RegisterTable(p.get("table", "holding")),
                address=p["address"], data_type=DataType(p.get("type", "uint16")),
                count=p.get("count", 1),
            )
            for name, p in data["points"].items()
        ]  # fmt: skip
        result[path.stem] = (len(specs), len(plan_reads(specs)))
    return result


async def run(cycles: int) -> dict[str, object]:
    simulator = ModbusSimulator(sensors=[SimRegisterBank(u, size=400) for u in UNITS])
    await simulator.start()
    try:
        await time_bare(simulator.port, 2)  # warm-up
        # Alternating rounds, so a burst of load on a shared machine does
        # not land on one loop only.
        bare_rounds: list[float] = []
        driver_rounds: list[float] = []
        records_rounds: list[float] = []
        for _ in range(ROUNDS):
            bare_rounds.append(await time_bare(simulator.port, cycles))
            drivers = drivers_for(simulator.port, 10)
            driver_rounds.append(await time_drivers(drivers, cycles))
            drivers = drivers_for(simulator.port, 10)
            records_rounds.append(await time_drivers(drivers, cycles, records=True))
        per_point = await time_drivers(
            drivers_for(simulator.port, 0), max(1, cycles // 10)
        )
    finally:
        await simulator.stop()
    planned = len(plan_reads(points(), max_gap=10))
    own_work = await own_work_us(cycles * 10)
    bare, driver = max(bare_rounds), max(driver_rounds)
    records = max(records_rounds)
    return {
        "points": len(UNITS) * POINTS_PER_UNIT,
        "cycles": cycles,
        "rounds": ROUNDS,
        "readings_per_s": {"bare": bare, "driver": driver,
                           "driver_records": records, "per_point": per_point},
        "driver_overhead_pct": 100.0 * (bare / driver - 1.0),
        "driver_overhead_pct_median": median_overhead(bare_rounds, driver_rounds),
        "records_overhead_pct": 100.0 * (bare / records - 1.0),
        "records_overhead_pct_median": median_overhead(bare_rounds, records_rounds),
        "own_work_us_per_request": own_work,
        "requests_per_cycle": {"planned": planned * len(UNITS),
                               "per_point": POINTS_PER_UNIT * len(UNITS)},
        "profiles": {k: {"points": p, "requests": r}
                     for k, (p, r) in profile_requests().items()},
    }  # fmt: skip


def median_overhead(bare_rounds: list[float], rounds: list[float]) -> float:
    """Return the median overhead in % of rounds paired with bare rounds."""
    paired = [100.0 * (b / r - 1.0) for b, r in zip(bare_rounds, rounds, strict=True)]
    return statistics.median(paired)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cycles", type=int, default=30, help="poll cycles (30)")
    parser.add_argument("--json", action="store_true", help="print JSON")
    args = parser.parse_args()
    result = asyncio.run(run(args.cycles))
    if args.json:
        print(json.dumps(result, indent=2))
        return
    rates = result["readings_per_s"]
    assert isinstance(rates, dict)
    print(f"{'loop':<16}{'readings/s':>12}{'ratio to bare':>16}")
    for name, rate in rates.items():
        print(f"{name:<16}{rate:>12.0f}{rate / rates['bare']:>16.2f}")
    for name in ("driver", "records"):
        print(
            f"{name} overhead: {result[f'{name}_overhead_pct']:.1f} % (best "
            f"rounds), {result[f'{name}_overhead_pct_median']:.1f} % (median "
            "of paired rounds)"
        )
    own = result["own_work_us_per_request"]
    assert isinstance(own, dict)
    print(
        f"own work per request, pymodbus left out: driver {own['driver']:.2f} "
        f"µs, bare {own['bare']:.2f} µs"
    )
    print(f"requests per cycle: {result['requests_per_cycle']}")
    print(f"shipped profiles (points, requests): {result['profiles']}")


if __name__ == "__main__":
    main()
