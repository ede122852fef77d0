from __future__ import annotations

import math
import struct

import numpy as np
import pytest

from drivers.codec import (
    ORDERS,
    as_registers,
    decode_bits,
    decode_block,
    decode_scalar,
    decode_string,
    encode_string,
    encode_values,
    order_name,
)
from drivers.errors import DriverDecodeError
from drivers.spec import DataType, Endian

B, L = Endian.BIG, Endian.LITTLE

# -1.11 as IEEE 754 single precision is 0xBF8E147B (bytes A=BF B=8E C=14 D=7B).
FLOAT_MINUS_1_11 = [
    (B, B, [0xBF8E, 0x147B]),
    (B, L, [0x147B, 0xBF8E]),
    (L, B, [0x8EBF, 0x7B14]),
    (L, L, [0x7B14, 0x8EBF]),
]


class TestDecodeBlock:
    @pytest.mark.parametrize(
        ("byte_order", "word_order", "registers"), FLOAT_MINUS_1_11
    )
    def test_float32_in_every_order(
        self, byte_order: Endian, word_order: Endian, registers: list[int]
    ) -> None:
        value = decode_block(registers, DataType.FLOAT32, byte_order, word_order)
        assert value.shape == (1,)
        assert value[0] == np.float32(-1.11)

    def test_little_word_order_gives_values_in_place(self) -> None:
        # 1.0 = 0x3F800000, 2.0 = 0x40000000, 3.0 = 0x40400000.
        registers = [0x0000, 0x3F80, 0x0000, 0x4000, 0x0000, 0x4040]
        values = decode_block(registers, DataType.FLOAT32, B, L)
        assert values.tolist() == [1.0, 2.0, 3.0]

    @pytest.mark.parametrize(
        ("data_type", "registers", "expected"),
        [
            (DataType.INT16, [0xFFFE], -2),
            (DataType.UINT16, [0xFFFE], 65534),
            (DataType.INT32, [0xFFFF, 0xFFFD], -3),
            (DataType.UINT32, [0x0001, 0x0000], 65536),
            (DataType.INT64, [0xFFFF, 0xFFFF, 0xFFFF, 0xFFFF], -1),
            (DataType.UINT64, [0x0001, 0, 0, 0], 2**48),
            (DataType.FLOAT64, [0x4009, 0x21FB, 0x5444, 0x2D18], math.pi),
        ],
    )
    def test_big_endian_types(
        self, data_type: DataType, registers: list[int], expected: float
    ) -> None:
        assert decode_block(registers, data_type)[0] == expected

    @pytest.mark.parametrize(("byte_order", "word_order"), ORDERS)
    def test_float64_orders_match_struct(
        self, byte_order: Endian, word_order: Endian
    ) -> None:
        wire = struct.pack(">d", -12345.678)
        words = [wire[i : i + 2] for i in range(0, 8, 2)]
        if word_order is L:
            words.reverse()
        if byte_order is L:
            words = [w[::-1] for w in words]
        registers = [int.from_bytes(w, "big") for w in words]
        value = decode_block(registers, DataType.FLOAT64, byte_order, word_order)
        assert value[0] == -12345.678

    def test_decodes_8192_floats_from_16384_registers(self) -> None:
        expected = np.arange(8192, dtype=np.float32) * np.float32(0.25) - 1000
        registers = np.frombuffer(expected.astype(">f4").tobytes(), dtype=">u2")
        values = decode_block(registers.astype(np.uint16), DataType.FLOAT32)
        assert values.dtype == np.float32
        np.testing.assert_array_equal(values, expected)

    def test_rejects_register_above_16_bits(self) -> None:
        with pytest.raises(DriverDecodeError, match=r"0\.\.0xFFFF, found 65536"):
            decode_block([1, 0x10000], DataType.UINT32)

    def test_rejects_partial_value(self) -> None:
        with pytest.raises(DriverDecodeError, match="multiple of 2 registers, found 3"):
            decode_block([1, 2, 3], DataType.FLOAT32)

    def test_rejects_string_type(self) -> None:
        with pytest.raises(ValueError, match="decode_string"):
            decode_block([1], DataType.STRING)


class TestDecodeScalar:
    @pytest.mark.parametrize(
        ("byte_order", "word_order", "registers"), FLOAT_MINUS_1_11
    )
    def test_matches_block_decoding(
        self, byte_order: Endian, word_order: Endian, registers: list[int]
    ) -> None:
        value = decode_scalar(registers, DataType.FLOAT32, byte_order, word_order)
        assert value == pytest.approx(-1.11, rel=1e-6)

    def test_rejects_wrong_count(self) -> None:
        with pytest.raises(DriverDecodeError, match="expected 2 registers, found 1"):
            decode_scalar([1], DataType.UINT32)

    def test_rejects_negative_register(self) -> None:
        with pytest.raises(DriverDecodeError, match=r"0\.\.0xFFFF"):
            decode_scalar([-1], DataType.INT16)


class TestStrings:
    def test_big_byte_order_puts_first_char_high(self) -> None:
        # "AB" = 0x41 0x42, "C" + NUL = 0x43 0x00, then space padding.
        assert decode_string([0x4142, 0x4300, 0x2020]) == "ABC"

    def test_little_byte_order_swaps_pairs(self) -> None:
        assert decode_string([0x4241, 0x0043], L) == "ABC"

    def test_round_trip(self) -> None:
        registers = encode_string("VIB-3X", 4, L)
        assert len(registers) == 4
        assert decode_string(registers, L) == "VIB-3X"

    def test_rejects_text_longer_than_registers(self) -> None:
        with pytest.raises(ValueError, match="hold 4 characters, found 5"):
            encode_string("ABCDE", 2)


class TestBits:
    def test_selects_bit_of_each_register(self) -> None:
        bits = decode_bits([0b0100, 0b0000, 0xFFFF], 2)
        assert bits.tolist() == [True, False, True]

    def test_rejects_bit_16(self) -> None:
        with pytest.raises(ValueError, match=r"0\.\.15"):
            decode_bits([0], 16)


class TestEncodeValues:
    @pytest.mark.parametrize(
        ("byte_order", "word_order", "registers"), FLOAT_MINUS_1_11
    )
    def test_float32_layouts(
        self, byte_order: Endian, word_order: Endian, registers: list[int]
    ) -> None:
        assert encode_values([-1.11], DataType.FLOAT32, byte_order, word_order) == (
            registers
        )

    @pytest.mark.parametrize(
        "data_type",
        [t for t in DataType if t not in (DataType.BOOL, DataType.STRING)],
    )
    @pytest.mark.parametrize(("byte_order", "word_order"), ORDERS)
    def test_round_trip_every_type_and_order(
        self, data_type: DataType, byte_order: Endian, word_order: Endian
    ) -> None:
        values = [0, 1, 100, 32767] if "uint" in data_type.value else [-5, 0, 7, 300]
        registers = encode_values(values, data_type, byte_order, word_order)
        decoded = decode_block(registers, data_type, byte_order, word_order)
        assert decoded.tolist() == values

    def test_rejects_value_outside_integer_type(self) -> None:
        with pytest.raises(ValueError, match=r"0\.\.65535"):
            encode_values([70000], DataType.UINT16)


class TestOrderName:
    def test_four_byte_names(self) -> None:
        assert [order_name(2, b, w) for b, w in ORDERS] == [
            "ABCD",
            "CDAB",
            "BADC",
            "DCBA",
        ]

    def test_eight_byte_names(self) -> None:
        assert [order_name(4, b, w) for b, w in ORDERS] == [
            "ABCDEFGH",
            "GHEFCDAB",
            "BADCFEHG",
            "HGFEDCBA",
        ]


class TestAsRegisters:
    def test_rejects_two_dimensional_block(self) -> None:
        with pytest.raises(DriverDecodeError, match="1-D"):
            as_registers(np.zeros((2, 2), dtype=np.uint16))
