"""Driver specs reject register addresses outside the Modbus data model."""

from __future__ import annotations

import pytest

from drivers.errors import DriverConfigError
from drivers.spec import ModbusPointSpec, ModbusWaveformSpec


def waveform(**addresses: int) -> ModbusWaveformSpec:
    fields = {
        "block_address": 1000,
        "sample_count_address": 100,
        "sample_rate_address": 102,
        "sequence_address": 104,
    }
    fields.update(addresses)
    return ModbusWaveformSpec(name="accel", asset="m1", max_samples=4096, **fields)


class TestAddressRange:
    @pytest.mark.parametrize("address", [0, 65535])
    def test_point_accepts_16_bit_offsets(self, address: int) -> None:
        assert ModbusPointSpec(name="p", asset="m1", address=address).address == (
            address
        )

    @pytest.mark.parametrize("address", [-1, 65536, 400001])
    def test_point_rejects_out_of_range(self, address: int) -> None:
        with pytest.raises(DriverConfigError) as error:
            ModbusPointSpec(name="p", asset="m1", address=address)
        message = str(error.value)
        assert "'p'" in message
        assert "0..65535" in message
        assert repr(address) in message

    @pytest.mark.parametrize(
        "field",
        ["block_address", "sample_count_address", "ready_address", "page_address"],
    )
    def test_waveform_rejects_out_of_range(self, field: str) -> None:
        with pytest.raises(DriverConfigError) as error:
            waveform(**{field: 300107})
        assert field in str(error.value)
        assert "300107" in str(error.value)

    def test_waveform_accepts_unset_optional_addresses(self) -> None:
        spec = waveform()
        assert spec.trigger_address is None
        assert spec.page_address is None
