"""Turn OPC UA data values into readings with a quality."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Final

from asyncua import ua

from drivers.base import (
    GOOD,
    Quality,
    QualityReason,
    QualityStatus,
    Reading,
    ScalarValue,
)
from drivers.spec import OpcUaPointSpec

# Status codes (OPC UA Part 4, 7.39) that mean the server could not reach
# the field device, as opposed to the device reporting a fault.
_COMMUNICATION_CODES: Final = frozenset(
    {
        ua.StatusCodes.BadCommunicationError,
        ua.StatusCodes.BadNoCommunication,
        ua.StatusCodes.BadNotConnected,
        ua.StatusCodes.BadConnectionClosed,
        ua.StatusCodes.BadServerNotConnected,
        ua.StatusCodes.BadWaitingForInitialData,
        ua.StatusCodes.UncertainNoCommunicationLastUsableValue,
    }
)
_REASON_BY_CODE: Final = {
    ua.StatusCodes.BadTimeout: QualityReason.TIMEOUT,
    ua.StatusCodes.BadOutOfRange: QualityReason.OUT_OF_RANGE,
    ua.StatusCodes.UncertainEngineeringUnitsExceeded: QualityReason.OUT_OF_RANGE,
    ua.StatusCodes.UncertainLastUsableValue: QualityReason.STALE,
}

# The top two bits of a status code give its severity.
_SEVERITY_MASK: Final = 0xC0000000
_SEVERITY_UNCERTAIN: Final = 0x40000000


def status_of(data_value: ua.DataValue) -> ua.StatusCode:
    """Return the status code of a data value, Good when absent."""
    status = data_value.StatusCode
    return status if status is not None else ua.StatusCode()


def quality_from_status(status: ua.StatusCode) -> Quality:
    """Map an OPC UA status code to a quality with its name as detail."""
    severity = status.value & _SEVERITY_MASK
    if severity == 0:
        return GOOD
    code = status.value & 0xFFFF0000
    if code in _COMMUNICATION_CODES:
        reason = QualityReason.COMM_ERROR
    else:
        reason = _REASON_BY_CODE.get(code, QualityReason.SENSOR_FAULT)
    level = (
        QualityStatus.UNCERTAIN
        if severity == _SEVERITY_UNCERTAIN
        else QualityStatus.BAD
    )
    return Quality(status=level, reason=reason, detail=status.name)


def source_time(data_value: ua.DataValue) -> datetime:
    """Return the source timestamp, else the server's, else now, in UTC."""
    stamp = data_value.SourceTimestamp or data_value.ServerTimestamp
    if stamp is None:
        return datetime.now(UTC)
    if stamp.tzinfo is None:
        return stamp.replace(tzinfo=UTC)
    return stamp.astimezone(UTC)


def reading_from_value(
    point: OpcUaPointSpec, data_value: ua.DataValue, *, source: str
) -> Reading:
    """Build a reading: scale a numeric value, keep bad values with a reason."""
    quality = quality_from_status(status_of(data_value))
    raw = data_value.Value.Value if data_value.Value is not None else None
    value: ScalarValue

    if isinstance(raw, bool) or raw is None or isinstance(raw, str):
        value = raw
    elif isinstance(raw, int | float):
        value = float(raw) * point.scale + point.offset
        if point.valid_range is not None and quality.is_good:
            low, high = point.valid_range
            if not low <= value <= high:
                quality = Quality.bad(
                    QualityReason.OUT_OF_RANGE,
                    f"{value!r} outside the valid range [{low}, {high}]",
                )
    else:
        value = None
        quality = Quality.bad(
            QualityReason.DECODE_ERROR,
            f"expected a number, boolean or string, found {type(raw).__name__}",
        )

    return Reading(
        asset=point.asset,
        point=point.name,
        timestamp=source_time(data_value),
        value=value,
        unit=point.unit,
        quality=quality,
        source=source,
    )


def missing_reading(point: OpcUaPointSpec, reason: str, *, source: str) -> Reading:
    """Build a bad reading for a point whose node could not be resolved."""
    return Reading(
        asset=point.asset,
        point=point.name,
        timestamp=datetime.now(UTC),
        value=None,
        unit=point.unit,
        quality=Quality.bad(QualityReason.SENSOR_FAULT, reason),
        source=source,
    )


def stale_reading(reading: Reading, age_s: float) -> Reading:
    """Return ``reading`` marked uncertain/stale unless it is already bad."""
    if reading.quality.status is QualityStatus.BAD:
        return reading
    quality = Quality(
        status=QualityStatus.UNCERTAIN,
        reason=QualityReason.STALE,
        detail=f"last confirmed {age_s:.1f} s ago",
    )
    return Reading(
        asset=reading.asset,
        point=reading.point,
        timestamp=reading.timestamp,
        value=reading.value,
        unit=reading.unit,
        quality=quality,
        source=reading.source,
    )
