"""Topics and JSON payloads of the MQTT publisher."""

from __future__ import annotations

import enum
import json
import math
from datetime import UTC, datetime, timedelta, timezone

import numpy as np
import pytest

from agent.mqtt_payloads import (
    asset_topic,
    encode_fields,
    encode_reading,
    format_timestamp,
    reading_topic,
)
from drivers.base import Quality, QualityReason, QualityStatus
from tests.agent.mqtt_support import make_reading

NOW = datetime(2024, 3, 1, 12, 0, 0, tzinfo=UTC)


class Zone(enum.Enum):
    B = "B"


class TestFormatTimestamp:
    def test_utc_ends_in_z(self) -> None:
        stamp = datetime(2024, 1, 2, 3, 4, 5, 678_000, tzinfo=UTC)

        assert format_timestamp(stamp) == "2024-01-02T03:04:05.678Z"

    def test_offset_converted_to_utc(self) -> None:
        plus_two = timezone(timedelta(hours=2))
        stamp = datetime(2024, 1, 2, 3, 4, 5, tzinfo=plus_two)

        assert format_timestamp(stamp) == "2024-01-02T01:04:05.000Z"

    def test_naive_rejected(self) -> None:
        with pytest.raises(ValueError, match="timezone-aware"):
            format_timestamp(datetime(2024, 1, 2))


class TestTopics:
    def test_reading_topic(self) -> None:
        topic = reading_topic("cmagent/v1", "gw1", make_reading(1.0))

        assert topic == "cmagent/v1/gw1/pump-1/bearing_temp"

    @pytest.mark.parametrize("asset", ["", "a/b", "a+", "#", "x" * 65, "-lead"])
    def test_invalid_asset_rejected(self, asset: str) -> None:
        with pytest.raises(ValueError, match="asset"):
            asset_topic("cmagent/v1", "gw1", asset, "health")


class TestEncodeReading:
    def test_good_float(self) -> None:
        body = json.loads(encode_reading(make_reading(71.5)))

        assert body == {
            "ts": "2024-03-01T12:30:05.250Z",
            "value": 71.5,
            "unit": "degC",
            "quality": "good",
        }

    @pytest.mark.parametrize(
        ("value", "expected"),
        [(3, 3), (True, True), ("RUN", "RUN"), (None, None)],
    )
    def test_non_float_values_kept(self, value: object, expected: object) -> None:
        body = json.loads(encode_reading(make_reading(value)))

        assert body["value"] == expected
        assert type(body["value"]) is type(expected)

    def test_numpy_float32_as_number(self) -> None:
        body = json.loads(encode_reading(make_reading(np.float32(0.5))))

        assert body["value"] == 0.5

    def test_numpy_int_stays_integer(self) -> None:
        body = json.loads(encode_reading(make_reading(np.int64(7))))

        assert body["value"] == 7
        assert isinstance(body["value"], int)

    def test_nan_with_uncertain_quality_kept_uncertain(self) -> None:
        uncertain = Quality(status=QualityStatus.UNCERTAIN, reason=QualityReason.STALE)

        body = json.loads(encode_reading(make_reading(math.nan, quality=uncertain)))

        assert body["value"] is None
        assert body["quality"] == "uncertain/stale"


class TestEncodeFields:
    def test_adds_ts_when_missing(self) -> None:
        body = json.loads(encode_fields({"score": 90}, now=NOW))

        assert body == {"ts": "2024-03-01T12:00:00.000Z", "score": 90}

    def test_given_ts_wins(self) -> None:
        body = json.loads(encode_fields({"ts": "given"}, now=NOW))

        assert body["ts"] == "given"

    def test_nested_non_finite_become_null(self) -> None:
        fields = {"orders": [1.0, math.inf], "bands": {"hf": math.nan}}

        body = json.loads(encode_fields(fields, now=NOW))

        assert body["orders"] == [1.0, None]
        assert body["bands"] == {"hf": None}

    def test_datetime_enum_and_quality_encoded(self) -> None:
        fields = {
            "since": datetime(2024, 3, 1, 11, 0, tzinfo=UTC),
            "zone": Zone.B,
            "quality": Quality.bad(QualityReason.TIMEOUT),
        }

        body = json.loads(encode_fields(fields, now=NOW))

        assert body["since"] == "2024-03-01T11:00:00.000Z"
        assert body["zone"] == "B"
        assert body["quality"] == "bad/timeout"

    def test_unsupported_value_rejected(self) -> None:
        with pytest.raises(TypeError, match="object"):
            encode_fields({"thing": object()}, now=NOW)
