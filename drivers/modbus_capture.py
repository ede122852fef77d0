"""Reading a waveform capture block from a Modbus vibration sensor.

The sequence follows :class:`drivers.spec.ModbusWaveformSpec`: write the
requested length, trigger, wait for ready, read sequence, rate, count and
speed, read the samples in chunks (page by page for a paged block), then
read the sequence again. A sensor that starts a new capture
while the block is being read would mix two captures into one waveform,
so a changed sequence number means the capture is retried, never used.
"""

from __future__ import annotations

import asyncio
import math
import time
from datetime import UTC, datetime
from typing import Final, Protocol

import numpy as np
from numpy.typing import NDArray

from drivers.base import Waveform
from drivers.codec import decode_block, decode_scalar, encode_values
from drivers.errors import DriverProtocolError, DriverTimeoutError
from drivers.spec import REGISTER_COUNT, DataType, ModbusWaveformSpec, RegisterTable

CAPTURE_ATTEMPTS: Final = 3
"""Captures tried before a waveform that keeps tearing is given up."""

READY_POLL_S: Final = 0.05


class RegisterIO(Protocol):
    """Operations a capture needs from a driver."""

    device_id: str

    async def read_block(
        self, table: RegisterTable, address: int, count: int
    ) -> list[int] | list[bool]: ...

    async def write_register(self, address: int, value: int) -> None: ...

    async def write_registers(self, address: int, values: list[int]) -> None: ...


async def capture_waveform(
    io: RegisterIO, spec: ModbusWaveformSpec, *, attempts: int = CAPTURE_ATTEMPTS
) -> Waveform:
    """Trigger, wait for and read one capture, retrying torn ones.

    Raises:
        DriverProtocolError: the capture was torn ``attempts`` times, or
            the sensor reported an invalid count or sample rate.
        DriverTimeoutError: the sensor was not ready within
            ``spec.ready_timeout_s``.
    """
    for _ in range(attempts):
        waveform = await _capture_once(io, spec)
        if waveform is not None:
            return waveform
    raise DriverProtocolError(
        f"device {io.device_id!r} waveform {spec.name!r}: capture torn "
        f"{attempts} times (sequence changed while reading)",
        device=io.device_id,
    )


async def _capture_once(io: RegisterIO, spec: ModbusWaveformSpec) -> Waveform | None:
    if spec.capture_length_address is not None:
        requested = spec.capture_samples or spec.max_samples
        registers = encode_values(
            [requested], spec.sample_count_type, spec.byte_order, spec.word_order
        )
        await io.write_registers(spec.capture_length_address, registers)
    if spec.trigger_address is not None:
        await io.write_register(spec.trigger_address, 1)
    if spec.ready_address is not None:
        await _wait_ready(io, spec)

    sequence = await _read_number(io, spec, spec.sequence_address, DataType.UINT32)
    fs_hz = float(
        await _read_number(io, spec, spec.sample_rate_address, spec.sample_rate_type)
    )
    count = int(
        await _read_number(io, spec, spec.sample_count_address, spec.sample_count_type)
    )
    rpm = None
    if spec.rpm_address is not None:
        rpm = float(await _read_number(io, spec, spec.rpm_address, spec.rpm_type))
    _check_header(io, spec, fs_hz, count)
    timestamp = datetime.now(UTC)

    samples = await _read_samples(io, spec, count)
    after = await _read_number(io, spec, spec.sequence_address, DataType.UINT32)
    if after != sequence:
        return None
    return Waveform(
        asset=spec.asset,
        point=spec.name,
        timestamp=timestamp,
        fs_hz=fs_hz,
        samples=samples,
        unit=spec.unit,
        rpm=rpm if rpm and math.isfinite(rpm) and rpm > 0 else None,
        source=io.device_id,
        sequence=int(sequence),
    )


def _check_header(
    io: RegisterIO, spec: ModbusWaveformSpec, fs_hz: float, count: int
) -> None:
    where = f"device {io.device_id!r} waveform {spec.name!r}"
    if not (math.isfinite(fs_hz) and fs_hz > 0):
        raise DriverProtocolError(
            f"{where}: expected a sample rate > 0 Hz at address "
            f"{spec.sample_rate_address}, found {fs_hz!r}",
            device=io.device_id,
        )
    if not 1 <= count <= spec.max_samples:
        raise DriverProtocolError(
            f"{where}: expected a sample count of 1..{spec.max_samples} at "
            f"address {spec.sample_count_address}, found {count}",
            device=io.device_id,
        )


async def _wait_ready(io: RegisterIO, spec: ModbusWaveformSpec) -> None:
    assert spec.ready_address is not None
    deadline = time.monotonic() + spec.ready_timeout_s
    while True:
        (ready,) = await io.read_block(spec.table, spec.ready_address, 1)
        if ready:
            return
        if time.monotonic() >= deadline:
            raise DriverTimeoutError(
                f"device {io.device_id!r} waveform {spec.name!r}: not ready "
                f"within {spec.ready_timeout_s} s (address {spec.ready_address})",
                device=io.device_id,
            )
        await asyncio.sleep(READY_POLL_S)


async def _read_number(
    io: RegisterIO, spec: ModbusWaveformSpec, address: int, data_type: DataType
) -> float | int:
    width = REGISTER_COUNT[data_type]
    registers = await io.read_block(spec.table, address, width)
    return decode_scalar(
        [int(r) for r in registers], data_type, spec.byte_order, spec.word_order
    )


async def _read_samples(
    io: RegisterIO, spec: ModbusWaveformSpec, count: int
) -> np.ndarray:
    width = REGISTER_COUNT[spec.sample_type]
    registers = np.empty(count * width, dtype=np.uint16)
    if spec.page_address is None or spec.page_samples is None:
        await _read_registers(io, spec, registers)
    else:
        page_registers = spec.page_samples * width
        for page, start in enumerate(range(0, registers.size, page_registers)):
            await io.write_register(spec.page_address, page)
            await _read_registers(io, spec, registers[start : start + page_registers])

    values = decode_block(registers, spec.sample_type, spec.byte_order, spec.word_order)
    return values.astype(np.float64) * spec.scale


async def _read_registers(
    io: RegisterIO, spec: ModbusWaveformSpec, out: NDArray[np.uint16]
) -> None:
    """Fill ``out`` with registers from the block start, chunk by chunk."""
    width = REGISTER_COUNT[spec.sample_type]
    # A chunk contains whole samples, so no value straddles two requests.
    chunk = max(width, spec.chunk_registers - spec.chunk_registers % width)
    for start in range(0, out.size, chunk):
        size = min(chunk, out.size - start)
        block = await io.read_block(spec.table, spec.block_address + start, size)
        out[start : start + size] = block
