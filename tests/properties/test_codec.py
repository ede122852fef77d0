"""Property tests of the register codec: round trips and hostile blocks."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.codec import (
    ORDERS,
    decode_block,
    decode_scalar,
    decode_string,
    encode_string,
    encode_values,
)
from drivers.errors import DriverDecodeError
from drivers.spec import REGISTER_COUNT, DataType, Endian

INTEGER_TYPES = {
    DataType.INT16: (-(2**15), 2**15 - 1),
    DataType.UINT16: (0, 2**16 - 1),
    DataType.INT32: (-(2**31), 2**31 - 1),
    DataType.UINT32: (0, 2**32 - 1),
    DataType.INT64: (-(2**63), 2**63 - 1),
    DataType.UINT64: (0, 2**64 - 1),
}
FLOAT_WIDTHS = {DataType.FLOAT32: 32, DataType.FLOAT64: 64}
NUMERIC_TYPES = [*INTEGER_TYPES, *FLOAT_WIDTHS]
LAYOUTS = [(t, b, w) for t in NUMERIC_TYPES for b, w in ORDERS]

registers = st.integers(min_value=0, max_value=0xFFFF)


def layout_id(layout: tuple[DataType, Endian, Endian]) -> str:
    data_type, byte_order, word_order = layout
    return f"{data_type.value}-{byte_order.value}-{word_order.value}"


def same_number(found: float | int, expected: float | int) -> bool:
    """Compare exactly, NaN equal to NaN and -0.0 apart from 0.0."""
    if isinstance(expected, float) and math.isnan(expected):
        return math.isnan(found)
    if isinstance(expected, float) and expected == 0.0:
        return found == 0.0 and math.copysign(1, found) == math.copysign(1, expected)
    return found == expected


def values_of(data_type: DataType) -> st.SearchStrategy[float | int]:
    if data_type in INTEGER_TYPES:
        low, high = INTEGER_TYPES[data_type]
        return st.integers(min_value=low, max_value=high)
    return st.floats(width=FLOAT_WIDTHS[data_type], allow_nan=True)


class TestCodecRoundTrip:
    @pytest.mark.parametrize("layout", LAYOUTS, ids=layout_id)
    @settings(max_examples=40, deadline=None)
    @given(data=st.data())
    def test_encode_then_decode_returns_values(
        self, layout: tuple[DataType, Endian, Endian], data: st.DataObject
    ) -> None:
        data_type, byte_order, word_order = layout
        values = data.draw(st.lists(values_of(data_type), min_size=1, max_size=8))

        words = encode_values(values, data_type, byte_order, word_order)
        block = decode_block(words, data_type, byte_order, word_order)

        assert len(words) == REGISTER_COUNT[data_type] * len(values)
        assert all(0 <= word <= 0xFFFF for word in words)
        for found, expected in zip(block.tolist(), values, strict=True):
            assert same_number(found, expected), (found, expected)

    @pytest.mark.parametrize("layout", LAYOUTS, ids=layout_id)
    @settings(max_examples=40, deadline=None)
    @given(data=st.data())
    def test_scalar_path_matches_block_path(
        self, layout: tuple[DataType, Endian, Endian], data: st.DataObject
    ) -> None:
        data_type, byte_order, word_order = layout
        width = REGISTER_COUNT[data_type]
        words = data.draw(st.lists(registers, min_size=width, max_size=width))

        scalar = decode_scalar(words, data_type, byte_order, word_order)
        block = decode_block(words, data_type, byte_order, word_order)

        assert same_number(scalar, block.tolist()[0])

    @pytest.mark.parametrize("data_type", FLOAT_WIDTHS, ids=lambda t: t.value)
    @pytest.mark.parametrize(("byte_order", "word_order"), ORDERS)
    def test_special_floats_keep_their_bits(
        self, data_type: DataType, byte_order: Endian, word_order: Endian
    ) -> None:
        special = [math.inf, -math.inf, -0.0, 0.0, math.nan]

        words = encode_values(special, data_type, byte_order, word_order)
        block = decode_block(words, data_type, byte_order, word_order).tolist()

        assert block[0] == math.inf
        assert block[1] == -math.inf
        assert math.copysign(1, block[2]) == -1.0
        assert math.copysign(1, block[3]) == 1.0
        assert math.isnan(block[4])

    @settings(max_examples=60, deadline=None)
    @given(
        text=st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E)),
        spare=st.integers(min_value=0, max_value=4),
        byte_order=st.sampled_from(Endian),
    )
    def test_string_round_trip(self, text: str, spare: int, byte_order: Endian) -> None:
        count = (len(text) + 1) // 2 + spare

        words = encode_string(text, count, byte_order)

        assert len(words) == count
        assert decode_string(words, byte_order) == text


class TestCodecHostileBlocks:
    @pytest.mark.parametrize("layout", LAYOUTS, ids=layout_id)
    @settings(max_examples=30, deadline=None)
    @given(data=st.data())
    def test_random_block_decodes_or_raises_decode_error(
        self, layout: tuple[DataType, Endian, Endian], data: st.DataObject
    ) -> None:
        data_type, byte_order, word_order = layout
        width = REGISTER_COUNT[data_type]
        count = data.draw(st.integers(min_value=0, max_value=12)) * width
        words = data.draw(st.lists(registers, min_size=count, max_size=count))

        block = decode_block(
            np.array(words, dtype=np.uint16), data_type, byte_order, word_order
        )

        assert block.shape == (count // width,)

    @pytest.mark.parametrize(
        "data_type", [t for t in NUMERIC_TYPES if REGISTER_COUNT[t] > 1]
    )
    @settings(max_examples=30, deadline=None)
    @given(data=st.data())
    def test_wrong_length_names_expected_and_found(
        self, data_type: DataType, data: st.DataObject
    ) -> None:
        width = REGISTER_COUNT[data_type]
        count = data.draw(
            st.integers(min_value=1, max_value=40).filter(lambda n: n % width)
        )
        words = [0] * count

        with pytest.raises(DriverDecodeError) as block_error:
            decode_block(words, data_type)
        with pytest.raises(DriverDecodeError) as scalar_error:
            decode_scalar(words, data_type)

        assert f"multiple of {width}" in str(block_error.value)
        assert f"found {count}" in str(block_error.value)
        assert f"expected {width} registers, found {count}" in str(scalar_error.value)

    @pytest.mark.parametrize("data_type", NUMERIC_TYPES, ids=lambda t: t.value)
    @settings(max_examples=30, deadline=None)
    @given(
        hostile=st.lists(
            st.one_of(
                st.integers(),
                st.floats(),
                st.text(max_size=3),
                st.none(),
                st.booleans(),
            ),
            min_size=1,
            max_size=8,
        )
    )
    def test_hostile_registers_raise_decode_error_only(
        self, data_type: DataType, hostile: list[object]
    ) -> None:
        width = REGISTER_COUNT[data_type]
        try:
            block = decode_block(hostile, data_type)  # type: ignore[arg-type]
        except DriverDecodeError as exc:
            assert "expected" in str(exc)
        else:
            assert block.size * width == len(hostile)
        if len(hostile) != width:
            return
        try:
            decode_scalar(hostile, data_type)  # type: ignore[arg-type]
        except DriverDecodeError as exc:
            assert "expected" in str(exc)

    @pytest.mark.parametrize("data_type", NUMERIC_TYPES, ids=lambda t: t.value)
    def test_numpy_registers_decode_as_scalar(self, data_type: DataType) -> None:
        width = REGISTER_COUNT[data_type]
        words = np.arange(1, width + 1, dtype=np.uint16)

        scalar = decode_scalar(words, data_type)

        assert same_number(scalar, decode_block(words, data_type).tolist()[0])

    @pytest.mark.parametrize("data_type", list(INTEGER_TYPES), ids=lambda t: t.value)
    @pytest.mark.parametrize("value", [math.nan, math.inf, 1.5])
    def test_encode_rejects_non_integer_for_integer_type(
        self, data_type: DataType, value: float
    ) -> None:
        with pytest.raises(ValueError, match="whole numbers"):
            encode_values([value], data_type)
