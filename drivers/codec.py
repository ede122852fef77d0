"""Conversion between Modbus registers and typed values.

A register is 16 bits sent as two bytes, high byte first. Devices disagree
on how wider values are laid out, so two settings describe a layout:

* byte order: ``big`` keeps each register's bytes as sent, ``little`` swaps
  the two bytes of every register;
* word order: ``big`` puts the most significant register first, ``little``
  the least significant register first.

For a 4-byte value with bytes A B C D (A most significant) the four
combinations are the customary names ABCD (big/big), CDAB (big bytes,
little words), BADC (little bytes, big words) and DCBA (little/little);
8-byte values extend the same names to ABCDEFGH and its permutations.

Decoding works on whole blocks with NumPy and no Python loop per value.
This module does not use pymodbus' payload helpers, whose API has changed
between versions.
"""

from __future__ import annotations

import operator
import struct
from collections.abc import Sequence
from typing import Final

import numpy as np
from numpy.typing import NDArray

from drivers.errors import DriverDecodeError
from drivers.spec import REGISTER_COUNT, DataType, Endian

BIG_ENDIAN_DTYPE: Final[dict[DataType, str]] = {
    DataType.INT16: ">i2",
    DataType.UINT16: ">u2",
    DataType.INT32: ">i4",
    DataType.UINT32: ">u4",
    DataType.INT64: ">i8",
    DataType.UINT64: ">u8",
    DataType.FLOAT32: ">f4",
    DataType.FLOAT64: ">f8",
}
"""NumPy dtype of each numeric type as it is on the wire (ABCD order)."""

_LETTERS: Final = "ABCDEFGH"


def order_name(register_count: int, byte_order: Endian, word_order: Endian) -> str:
    """Return the customary name of a layout, such as ``CDAB``.

    The name lists the bytes of the value (A most significant) in the order
    they travel on the wire.
    """
    words = [_LETTERS[2 * i : 2 * i + 2] for i in range(register_count)]
    if word_order is Endian.LITTLE:
        words.reverse()
    if byte_order is Endian.LITTLE:
        words = [word[::-1] for word in words]
    return "".join(words)


ORDERS: Final[tuple[tuple[Endian, Endian], ...]] = (
    (Endian.BIG, Endian.BIG),
    (Endian.BIG, Endian.LITTLE),
    (Endian.LITTLE, Endian.BIG),
    (Endian.LITTLE, Endian.LITTLE),
)
"""Every (byte order, word order) pair, in the order ABCD, CDAB, BADC, DCBA."""


def as_registers(registers: NDArray[np.integer] | Sequence[int]) -> NDArray[np.uint16]:
    """Return registers as a 1-D uint16 array after checking their range.

    Raises:
        DriverDecodeError: a value is outside 0..0xFFFF or the input is not
            one-dimensional.
    """
    if isinstance(registers, np.ndarray) and registers.dtype == np.uint16:
        array = registers
    else:
        try:
            array = np.asarray(registers, dtype=np.int64)
        except (TypeError, ValueError, OverflowError) as exc:
            raise DriverDecodeError(
                f"expected integer registers within 0..0xFFFF, found {exc}"
            ) from exc
        bad = np.flatnonzero((array < 0) | (array > 0xFFFF))
        if bad.size:
            index = int(bad[0])
            raise DriverDecodeError(
                f"register {index} of the block: expected 0..0xFFFF, "
                f"found {int(array[index])!r}"
            )
        array = array.astype(np.uint16)
    if array.ndim != 1:
        raise DriverDecodeError(
            f"expected a 1-D block of registers, found shape {array.shape}"
        )
    return array


def _to_bytes(
    registers: NDArray[np.uint16], width: int, byte_order: Endian, word_order: Endian
) -> bytes:
    """Reorder a block into big-endian bytes, ``width`` registers per value."""
    values = registers.reshape(-1, width)
    if word_order is Endian.LITTLE:
        values = values[:, ::-1]
    wire = ">u2" if byte_order is Endian.BIG else "<u2"
    return np.ascontiguousarray(values).astype(wire).tobytes()


def decode_block(
    registers: NDArray[np.uint16] | Sequence[int],
    data_type: DataType,
    byte_order: Endian = Endian.BIG,
    word_order: Endian = Endian.BIG,
) -> NDArray[np.generic]:
    """Decode a block of consecutive values of one numeric type.

    Args:
        registers: the raw registers, a whole number of values long.
        data_type: any numeric type (not ``bool`` or ``string``).
        byte_order: order of the two bytes within each register.
        word_order: order of the registers within each value.

    Returns:
        One element per value, in the native NumPy type of ``data_type``
        (for example float32 for FLOAT32).

    Raises:
        DriverDecodeError: a register is out of range or the block length
            is not a multiple of the type's register count.
        ValueError: ``data_type`` is BOOL or STRING.
    """
    if data_type not in BIG_ENDIAN_DTYPE:
        raise ValueError(
            f"decode_block handles numeric types, found {data_type.value!r}; "
            "use decode_bits or decode_string"
        )
    array = as_registers(registers)
    width = REGISTER_COUNT[data_type]
    if array.size % width:
        raise DriverDecodeError(
            f"{data_type.value} takes {width} registers per value: expected a "
            f"multiple of {width} registers, found {array.size}"
        )

    raw = _to_bytes(array, width, byte_order, word_order)
    big = np.dtype(BIG_ENDIAN_DTYPE[data_type])
    return np.frombuffer(raw, dtype=big).astype(big.newbyteorder("="))


def decode_string(
    registers: NDArray[np.uint16] | Sequence[int], byte_order: Endian = Endian.BIG
) -> str:
    """Decode text stored two characters per register.

    With byte order ``big`` the first character is the high byte. Trailing
    NULs and spaces are removed; bytes that are not ASCII become U+FFFD.

    Raises:
        DriverDecodeError: a register is out of range.
    """
    array = as_registers(registers)
    wire = ">u2" if byte_order is Endian.BIG else "<u2"
    raw = array.astype(wire).tobytes()
    return raw.decode("ascii", errors="replace").rstrip("\x00 ")


def decode_bits(
    registers: NDArray[np.uint16] | Sequence[int], bit: int
) -> NDArray[np.bool_]:
    """Return bit ``bit`` (0 = least significant) of each register.

    Raises:
        DriverDecodeError: a register is out of range.
        ValueError: ``bit`` is outside 0..15.
    """
    if not 0 <= bit <= 15:
        raise ValueError(f"bit must be within 0..15, found {bit!r}")
    array = as_registers(registers)
    return ((array >> np.uint16(bit)) & np.uint16(1)).astype(bool)


def encode_values(
    values: Sequence[float | int] | NDArray[np.generic],
    data_type: DataType,
    byte_order: Endian = Endian.BIG,
    word_order: Endian = Endian.BIG,
) -> list[int]:
    """Encode numeric values into registers, the inverse of decode_block.

    Raises:
        ValueError: ``data_type`` is BOOL or STRING, or a value is not a
            whole number within the integer type.
    """
    if data_type not in BIG_ENDIAN_DTYPE:
        raise ValueError(
            f"encode_values handles numeric types, found {data_type.value!r}; "
            "use encode_string"
        )
    big = np.dtype(BIG_ENDIAN_DTYPE[data_type])
    if big.kind in "iu":
        source = _whole_numbers(values, data_type, big)
    else:
        source = np.asarray(values, dtype=np.float64)
    width = REGISTER_COUNT[data_type]

    words = np.frombuffer(source.astype(big).tobytes(), dtype=">u2")
    words = words.reshape(-1, width)
    if word_order is Endian.LITTLE:
        words = words[:, ::-1]
    if byte_order is Endian.LITTLE:
        words = words.byteswap()
    return [int(word) for word in words.reshape(-1)]


def _whole_numbers(
    values: Sequence[float | int] | NDArray[np.generic],
    data_type: DataType,
    big: np.dtype[np.generic],
) -> NDArray[np.generic]:
    """Check that ``values`` fit an integer type and return them in it.

    The check runs on Python integers because NumPy would turn a list
    mixing small values with ones above 2**63 into float64 and lose digits.
    """
    items = values.tolist() if isinstance(values, np.ndarray) else list(values)
    for item in items:
        if isinstance(item, float) and not item.is_integer():
            raise ValueError(
                f"{data_type.value}: expected whole numbers, found {item!r}"
            )
    numbers = [int(item) for item in items]
    info = np.iinfo(big)
    if numbers and (min(numbers) < info.min or max(numbers) > info.max):
        raise ValueError(
            f"{data_type.value}: expected values within {info.min}..{info.max}, found "
            f"from {min(numbers)!r} to {max(numbers)!r}"
        )
    return np.array(numbers, dtype=big)


def encode_string(
    text: str, register_count: int, byte_order: Endian = Endian.BIG
) -> list[int]:
    """Encode ASCII text into ``register_count`` registers, NUL-padded.

    Raises:
        ValueError: the text is not ASCII or is longer than the registers.
    """
    raw = text.encode("ascii")
    if len(raw) > 2 * register_count:
        raise ValueError(
            f"{register_count} registers hold {2 * register_count} characters, "
            f"found {len(raw)} in {text!r}"
        )
    raw = raw.ljust(2 * register_count, b"\x00")
    wire = ">u2" if byte_order is Endian.BIG else "<u2"
    return [int(word) for word in np.frombuffer(raw, dtype=wire)]


def apply_scale(
    raw: float | int, scale: float = 1.0, offset: float = 0.0
) -> float | int:
    """Return ``raw * scale + offset``; integers stay integers when unscaled."""
    if scale == 1.0 and offset == 0.0:
        return raw
    return float(raw) * scale + offset


STRUCT_FORMAT: Final[dict[DataType, str]] = {
    DataType.INT16: ">h",
    DataType.UINT16: ">H",
    DataType.INT32: ">i",
    DataType.UINT32: ">I",
    DataType.INT64: ">q",
    DataType.UINT64: ">Q",
    DataType.FLOAT32: ">f",
    DataType.FLOAT64: ">d",
}
"""``struct`` format of each numeric type as it is on the wire (ABCD order)."""


def decode_scalar(
    registers: Sequence[int],
    data_type: DataType,
    byte_order: Endian = Endian.BIG,
    word_order: Endian = Endian.BIG,
) -> float | int:
    """Decode one numeric value from exactly its registers.

    The per-value path of the driver: plain ``struct`` is several times
    faster than NumPy for a single value, and gives the same result as
    :func:`decode_block`.

    Raises:
        DriverDecodeError: wrong register count or a register out of range.
        ValueError: ``data_type`` is BOOL or STRING.
    """
    if data_type not in STRUCT_FORMAT:
        raise ValueError(f"decode_scalar handles numeric types, found {data_type}")
    width = REGISTER_COUNT[data_type]
    if len(registers) != width:
        raise DriverDecodeError(
            f"{data_type.value}: expected {width} registers, found {len(registers)}"
        )
    words = list(registers)
    if word_order is Endian.LITTLE:
        words.reverse()
    try:
        # operator.index accepts NumPy integers but no float, str or None.
        raw = b"".join(operator.index(word).to_bytes(2, "big") for word in words)
    except (OverflowError, TypeError) as exc:
        raise DriverDecodeError(
            f"{data_type.value}: expected registers within 0..0xFFFF, "
            f"found {list(registers)!r}"
        ) from exc
    if byte_order is Endian.LITTLE:
        raw = bytes(raw[i ^ 1] for i in range(len(raw)))
    value: float | int = struct.unpack(STRUCT_FORMAT[data_type], raw)[0]
    return value
