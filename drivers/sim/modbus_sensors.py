"""Register models of the simulated Modbus sensors.

Each sensor is one unit id. Its registers are computed when they are read,
from the wall clock, so a recording replays in real time. The layouts are
the ones the profiles ``config/devices/vib-triax-modbus.toml`` and
``config/devices/oil-modbus.toml`` describe; every multi-register value is
big-endian (ABCD). Addresses are zero-based.

Each sensor also has a :class:`RegisterMap`: the address ranges it serves
in each table. A datasheet lists a sensor's registers as a few groups of
related values, so each range runs from the first to the last register of
one group. A register inside a range that carries no value (a reserved
register between two values, such as input register 9 of the oil sensor)
reads as 0, so a planned read that spans such a gap succeeds. A read that
touches any address outside every range of its table fails with exception
code 2 (ILLEGAL DATA ADDRESS), as it would on a real sensor.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

import numpy as np
from numpy.typing import NDArray

from drivers.codec import encode_values
from drivers.sim.recordings import Recording, load_recording
from drivers.spec import DataType, RegisterTable

GRAVITY_M_S2: Final = 9.80665

# Vibration sensor, input registers.
VIB_VELOCITY_RMS: Final = 0  # float32, mm/s, 10-1000 Hz
VIB_ACCEL_RMS: Final = 2  # float32, g
VIB_ACCEL_PEAK: Final = 4  # float32, g
VIB_TEMPERATURE: Final = 6  # float32, °C
VIB_RPM: Final = 8  # float32, rev/min
CAPTURE_READY: Final = 100  # uint16, 1 once a capture is available
CAPTURE_SEQUENCE: Final = 102  # uint32
CAPTURE_SAMPLE_RATE: Final = 104  # float32, Hz
CAPTURE_SAMPLE_COUNT: Final = 106  # uint32
CAPTURE_RPM: Final = 108  # float32, rev/min at capture time
CAPTURE_START_INDEX: Final = 110  # uint32, recording index of sample 0
CAPTURE_BLOCK: Final = 1000  # float32 samples in g
# Vibration sensor, holding registers.
CAPTURE_TRIGGER: Final = 100  # uint16, write 1 to capture
CAPTURE_LENGTH: Final = 102  # uint32, samples per capture
CAPTURE_PAGE: Final = 104  # uint16, page mapped at CAPTURE_BLOCK

DEFAULT_CAPTURE_LENGTH: Final = 16_384
BLOCK_WINDOW_SAMPLES: Final = (65_536 - CAPTURE_BLOCK) // 2
"""float32 samples visible at once, between the block start and the end
of the 16-bit address space (32 268)."""
PAGE_SAMPLES: Final = 16_384
"""Samples per page: page p maps samples from p * PAGE_SAMPLES on at the
block. Reads past one page run on into the next, up to the window."""
MAX_CAPTURE_LENGTH: Final = 65_536

# Oil sensor, input registers.
OIL_COUNT_4UM: Final = 0  # float32, particles per mL > 4 µm(c)
OIL_COUNT_6UM: Final = 2  # float32, > 6 µm(c)
OIL_COUNT_14UM: Final = 4  # float32, > 14 µm(c)
OIL_CODE_4UM: Final = 6  # uint16, ISO 4406 code
OIL_CODE_6UM: Final = 7  # uint16
OIL_CODE_14UM: Final = 8  # uint16
OIL_WATER_SATURATION: Final = 10  # float32, %
OIL_TEMPERATURE: Final = 12  # float32, °C


@dataclass(frozen=True, slots=True, kw_only=True)
class RegisterMap:
    """Address ranges a sensor serves, per table; an empty table has none."""

    coil: tuple[range, ...] = ()
    discrete_input: tuple[range, ...] = ()
    input: tuple[range, ...] = ()
    holding: tuple[range, ...] = ()

    def ranges(self, table: RegisterTable) -> tuple[range, ...]:
        """Return the ranges of ``table``."""
        by_table = {
            RegisterTable.COIL: self.coil,
            RegisterTable.DISCRETE_INPUT: self.discrete_input,
            RegisterTable.INPUT: self.input,
            RegisterTable.HOLDING: self.holding,
        }
        return by_table[table]

    def covers(self, table: RegisterTable, address: int, count: int) -> bool:
        """Return whether ``count`` addresses from ``address`` are all served.

        Adjacent ranges join, so a read may run from one into the next.
        """
        position, end = address, address + count
        for served in sorted(self.ranges(table), key=lambda r: r.start):
            if served.start <= position < served.stop:
                position = served.stop
            if position >= end:
                return True
        return False


VIB_REGISTER_MAP: Final = RegisterMap(
    input=(
        range(VIB_VELOCITY_RMS, VIB_RPM + 2),
        range(CAPTURE_READY, CAPTURE_START_INDEX + 2),
        range(CAPTURE_BLOCK, CAPTURE_BLOCK + 2 * BLOCK_WINDOW_SAMPLES),
    ),
    holding=(range(CAPTURE_TRIGGER, CAPTURE_PAGE + 1),),
)
"""The vibration sensor's groups: overall values (input 0-9), capture
header (input 100-111), sample block window (input 1000-65535) and
capture control (holding 100-104)."""

OIL_REGISTER_MAP: Final = RegisterMap(
    input=(range(OIL_COUNT_4UM, OIL_TEMPERATURE + 2),),
)
"""The oil sensor's one group: counts, codes and readings (input 0-13)."""

ISO4406_UPPER_LIMITS: Final = (
    0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.3, 2.5, 5.0, 10.0, 20.0, 40.0,
    80.0, 160.0, 320.0, 640.0, 1300.0, 2500.0, 5000.0, 10_000.0, 20_000.0,
    40_000.0, 80_000.0, 160_000.0, 320_000.0, 640_000.0, 1_300_000.0,
    2_500_000.0,
)  # fmt: skip
"""Upper limit (particles per mL) of ISO 4406:1999 scale numbers 1 to 28."""


def iso4406_code(count_per_ml: float) -> int:
    """Return the ISO 4406 scale number whose range holds the count."""
    for code, upper in enumerate(ISO4406_UPPER_LIMITS, start=1):
        if count_per_ml <= upper:
            return code
    return len(ISO4406_UPPER_LIMITS) + 1


def _float32(value: float) -> list[int]:
    return encode_values([value], DataType.FLOAT32)


def _uint32(value: int) -> list[int]:
    return encode_values([value], DataType.UINT32)


NAN_REGISTERS: Final = [0x7FC0, 0x0000]
"""A quiet NaN as float32, what a sensor with a broken channel may send."""


class SimVibrationSensor:
    """A single-axis accelerometer replaying a shipped recording.

    Overall values are computed from the last second of replayed samples:
    acceleration RMS and peak directly, velocity RMS by integrating the
    spectrum (divide by 2πf) over 10-1000 Hz. The velocity is an estimate
    of what ISO 20816 asks for: it uses one rectangular-windowed second, so
    leakage makes it a little higher than a full analysis would find.

    Args:
        unit_id: Modbus unit id the sensor answers.
        recording: name of a recording from ``drivers.sim.recordings``.
        clock: wall-clock source in seconds, replaceable in tests.
    """

    def __init__(
        self,
        unit_id: int,
        recording: str,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.unit_id = unit_id
        self.register_map = VIB_REGISTER_MAP
        self.recording: Recording = load_recording(recording)
        self._clock = clock
        self._start = clock()
        self.capture_length = DEFAULT_CAPTURE_LENGTH
        self.sequence = 0
        self.capture_start = 0
        self._capture: NDArray[np.float32] = np.zeros(0, dtype=np.float32)
        self._capture_regs: NDArray[np.uint16] = np.zeros(0, dtype=np.uint16)
        self._overall_key = -1
        self._overall: dict[int, list[int]] = {}
        self.tears_pending = 0
        self.tear_after_reads = 1
        self.page = 0
        self._block_reads = 0
        self._torn = False
        self.capture()

    def position(self) -> int:
        """Index of the newest replayed sample at this moment."""
        elapsed = self._clock() - self._start
        return int(elapsed * self.recording.fs_hz) % self.recording.samples.size

    def _window(self, count: int) -> tuple[int, NDArray[np.float32]]:
        samples = self.recording.samples
        end = self.position() + 1
        start = (end - count) % samples.size
        index = (start + np.arange(count)) % samples.size
        return start, samples[index]

    def capture(self) -> None:
        """Take the newest ``capture_length`` samples as a new capture.

        A new capture maps page 0 at the block again.
        """
        self.capture_start, self._capture = self._window(self.capture_length)
        raw = self._capture.astype(">f4").tobytes()
        self._capture_regs = np.frombuffer(raw, dtype=">u2").astype(np.uint16)
        self.sequence = (self.sequence + 1) % 2**32
        self.page = 0
        self._block_reads = 0
        self._torn = False

    def overall(self) -> dict[int, float]:
        """Return the overall values by input register address."""
        fs = self.recording.fs_hz
        _, window = self._window(int(fs))
        accel = window.astype(np.float64)
        spectrum = np.fft.rfft(accel - accel.mean())
        freqs = np.fft.rfftfreq(accel.size, 1.0 / fs)
        band = (freqs >= 10.0) & (freqs <= 1000.0)
        velocity = spectrum[band] * GRAVITY_M_S2 * 1000.0 / (2 * np.pi * freqs[band])
        # Parseval for a one-sided spectrum: RMS² = 2 Σ|X|² / N².
        velocity_rms = (
            math.sqrt(2.0 * float(np.sum(np.abs(velocity) ** 2))) / accel.size
        )
        elapsed = self._clock() - self._start
        return {
            VIB_VELOCITY_RMS: velocity_rms,
            VIB_ACCEL_RMS: float(np.sqrt(np.mean(accel**2))),
            VIB_ACCEL_PEAK: float(np.max(np.abs(accel))),
            VIB_TEMPERATURE: 42.0 + 1.5 * math.sin(2 * math.pi * elapsed / 600.0),
            VIB_RPM: self.recording.rpm,
        }

    def input_registers(self, garbage: bool) -> dict[int, list[int]]:
        """Return the scalar input registers (not the sample block)."""
        # Recomputing four times a second keeps a busy poll loop cheap.
        key = int(self._clock() * 4)
        if key != self._overall_key:
            self._overall = {a: _float32(v) for a, v in self.overall().items()}
            self._overall_key = key
        registers = dict(self._overall)
        if garbage:
            registers = {a: NAN_REGISTERS for a in registers}
        registers[CAPTURE_READY] = [1 if self.sequence else 0]
        registers[CAPTURE_SEQUENCE] = _uint32(self.sequence)
        registers[CAPTURE_SAMPLE_RATE] = _float32(self.recording.fs_hz)
        registers[CAPTURE_SAMPLE_COUNT] = _uint32(self._capture.size)
        registers[CAPTURE_RPM] = _float32(self.recording.rpm)
        registers[CAPTURE_START_INDEX] = _uint32(self.capture_start)
        return registers

    def block_registers(self, offset: int, count: int) -> NDArray[np.uint16]:
        """Return ``count`` registers of the sample block from ``offset``."""
        torn_due = self._block_reads >= self.tear_after_reads
        if self.tears_pending and torn_due and not self._torn:
            # Fault injection: a new capture lands while the block is read,
            # once per capture the client started.
            self.tears_pending -= 1
            self.capture()
            self._torn = True
        self._block_reads += 1
        start = 2 * self.page * PAGE_SAMPLES + offset
        out = np.zeros(count, dtype=np.uint16)
        available = self._capture_regs[start : start + count]
        out[: available.size] = available
        return out

    def holding_registers(self) -> dict[int, list[int]]:
        return {
            CAPTURE_TRIGGER: [0],
            CAPTURE_LENGTH: _uint32(self.capture_length),
            CAPTURE_PAGE: [self.page],
        }

    def write_holding(self, address: int, values: list[int]) -> str | None:
        """Apply a write; return an error text for an invalid one."""
        if address == CAPTURE_TRIGGER and len(values) == 1:
            if values[0]:
                self.capture()
            return None
        if address == CAPTURE_LENGTH and len(values) == 2:
            length = (values[0] << 16) | values[1]
            if not 16 <= length <= MAX_CAPTURE_LENGTH:
                return f"capture length must be 16..{MAX_CAPTURE_LENGTH}"
            self.capture_length = length
            return None
        if address == CAPTURE_PAGE and len(values) == 1:
            pages = -(-self._capture.size // PAGE_SAMPLES)
            if not 0 <= values[0] < pages:
                return f"page must be 0..{pages - 1} for this capture"
            self.page = values[0]
            return None
        return f"no writable register at {address}"


class SimOilSensor:
    """An oil-condition sensor whose contamination drifts slowly.

    Counts start from a level of ISO 4406 17/15/12 and rise by about 10 %
    per hour with a small ten-minute oscillation; water saturation sits
    around 35 %.
    """

    def __init__(
        self, unit_id: int, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.unit_id = unit_id
        self.register_map = OIL_REGISTER_MAP
        self._clock = clock
        self._start = clock()

    def values(self) -> dict[str, float]:
        hours = (self._clock() - self._start) / 3600.0
        swing = 1.0 + 0.05 * math.sin(2 * math.pi * hours * 6.0)
        growth = 1.1**hours * swing
        return {
            "count_4um": 1000.0 * growth,
            "count_6um": 250.0 * growth,
            "count_14um": 30.0 * growth,
            "water_saturation_pct": 35.0 + 3.0 * math.sin(2 * math.pi * hours),
            "temperature_c": 55.0 + 2.0 * math.sin(2 * math.pi * hours / 2),
        }

    def input_registers(self, garbage: bool) -> dict[int, list[int]]:
        v = self.values()
        floats = {
            OIL_COUNT_4UM: v["count_4um"],
            OIL_COUNT_6UM: v["count_6um"],
            OIL_COUNT_14UM: v["count_14um"],
            OIL_WATER_SATURATION: v["water_saturation_pct"],
            OIL_TEMPERATURE: v["temperature_c"],
        }
        registers = {
            a: (NAN_REGISTERS if garbage else _float32(x)) for a, x in floats.items()
        }
        registers[OIL_CODE_4UM] = [iso4406_code(v["count_4um"])]
        registers[OIL_CODE_6UM] = [iso4406_code(v["count_6um"])]
        registers[OIL_CODE_14UM] = [iso4406_code(v["count_14um"])]
        return registers

    def holding_registers(self) -> dict[int, list[int]]:
        return {}

    def write_holding(self, address: int, values: list[int]) -> str | None:
        return f"no writable register at {address}"


class SimRegisterBank:
    """A plain bank of holding registers, register ``a`` holding ``a``.

    Its map is holding registers 0 to ``size - 1``. Used by the polling
    benchmark to serve many points cheaply.
    """

    def __init__(self, unit_id: int, size: int = 2000) -> None:
        self.unit_id = unit_id
        self.size = size
        self.register_map = RegisterMap(holding=(range(size),))
        self._values = list(range(size))

    def input_registers(self, garbage: bool) -> dict[int, list[int]]:
        return {}

    def holding_registers(self) -> dict[int, list[int]]:
        return {}

    def bank(self, address: int, count: int) -> list[int]:
        """Return ``count`` registers from ``address``, checked against the map."""
        return self._values[address : address + count]

    def write_holding(self, address: int, values: list[int]) -> str | None:
        if address + len(values) > self.size:
            return f"no writable register at {address}"
        self._values[address : address + len(values)] = values
        return None


SimSensor = SimVibrationSensor | SimOilSensor | SimRegisterBank
