"""Settings of devices: their points and waveforms, and the three drivers.

The models are used for devices inline in the agent's file and for device
profiles alike. :mod:`agent.settings` re-exports every public name.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Annotated, Any, Final, Literal

from pydantic import (
    AfterValidator,
    Field,
    ModelWrapValidatorHandler,
    TypeAdapter,
    ValidationError,
    model_validator,
)

from agent.settings_types import (
    ConfigFloat,
    ConfigInt,
    HostName,
    Identifier,
    OpcUaEndpoint,
    PositiveDurationS,
    RangeBoundFloat,
    RejectBoolean,
    SettingsRuleError,
    StrictModel,
    raise_problems,
)

MODICON_TABLES: Final = {3: "input", 4: "holding"}
"""Leading digit of a five-digit Modicon register number and its table."""

_MODICON_CONVERSION: ContextVar[bool] = ContextVar(
    "cmagent_modicon_conversion", default=True
)
"""Whether the point and waveform models being validated convert Modicon
numbers. A device or profile with ``modicon_addresses = false`` turns it
off for the points and waveforms it contains."""

_BOOLEAN: Final = TypeAdapter(bool)

REGISTER_COUNTS: Final = {
    "int16": 1,
    "uint16": 1,
    "bool": 1,
    "int32": 2,
    "uint32": 2,
    "float32": 2,
    "int64": 4,
    "uint64": 4,
    "float64": 4,
}
"""Registers each fixed-size type occupies; strings need an explicit count."""

WAVEFORM_READ_ADDRESS_KEYS: Final = (
    "block_address",
    "sample_count_address",
    "sample_rate_address",
    "sequence_address",
    "ready_address",
    "rpm_address",
)
"""Waveform address keys the driver reads from the waveform's ``table``."""

WAVEFORM_WRITE_ADDRESS_KEYS: Final = (
    "trigger_address",
    "capture_length_address",
    "page_address",
)
"""Waveform address keys the driver writes, always as holding registers."""

_BARE_NAMESPACE_INDEX: Final = re.compile(r"(?:^|;)\s*ns=(\d+)\s*;")


@contextmanager
def modicon_conversion(enabled: bool) -> Iterator[None]:
    """Convert Modicon numbers in the models validated within the block
    only when ``enabled``."""
    token = _MODICON_CONVERSION.set(enabled)
    try:
        yield
    finally:
        _MODICON_CONVERSION.reset(token)


def modicon_switch(table: object) -> bool:
    """Return the ``modicon_addresses`` switch of a raw device or profile
    header table: True unless it is a valid false value.

    An invalid value counts as true here, and the model reports it.
    """
    if not isinstance(table, Mapping) or "modicon_addresses" not in table:
        return True
    try:
        return _BOOLEAN.validate_python(table["modicon_addresses"])
    except ValidationError:
        return True


def six_digit_modicon_hint(address: object, key: str = "address") -> str:
    """Return a hint for a six-digit Modicon number such as 400001, else "".

    300001-365536 are input registers and 400001-465536 holding registers;
    the offset is the number minus 300001 or 400001. ``key`` is the address
    key the number was given for; a key the driver writes (always a
    holding register) gets no advice about the table.
    """
    if not isinstance(address, int) or isinstance(address, bool):
        return ""
    leading = address // 100_000
    table = MODICON_TABLES.get(leading)
    offset = address % 100_000 - 1
    if table is None or not 0 <= offset <= 65535:
        return ""
    advice = f"{key} = {offset}"
    if key not in WAVEFORM_WRITE_ADDRESS_KEYS:
        advice = f"table = {table!r} and {advice}"
    return (
        f"; {address} looks like a six-digit Modicon number "
        f"({leading}xxxxx is {table} offset xxxxx - 1), so write {advice}"
    )


def modicon_offset(address: int) -> tuple[str, int] | None:
    """Return ``(table, offset)`` for a Modicon register number, else None.

    30001-39999 are input registers and 40001-49999 holding registers; the
    offset is the number minus 30001 or 40001.
    """
    table = MODICON_TABLES.get(address // 10_000)
    if table is None or address % 10_000 == 0:
        return None
    return table, address % 10_000 - 1


def _modicon_value(value: Any) -> tuple[str, int] | None:
    """Return :func:`modicon_offset` of a raw TOML value, None for a non-int
    or while conversion is off."""
    if not isinstance(value, int) or isinstance(value, bool):
        return None
    if not _MODICON_CONVERSION.get():
        return None
    return modicon_offset(value)


def waveform_modicon_offsets(
    waveform: Mapping[str, Any],
) -> dict[str, tuple[str, int]]:
    """Find the Modicon numbers to convert in a raw waveform table.

    A read address converts when its number's table is the waveform's
    ``table``. Without a ``table`` key, the numbers of the read addresses
    choose it, unless they name both tables, in which case none of them
    converts. A write address converts when it is a holding-register
    number, because the driver writes holding registers only.

    Returns:
        ``{key: (table, offset)}`` for each address key to convert.
    """
    reads = {
        key: converted
        for key in WAVEFORM_READ_ADDRESS_KEYS
        if (converted := _modicon_value(waveform.get(key))) is not None
    }
    table = waveform.get("table")
    if table is None:
        implied = {register_table for register_table, _ in reads.values()}
        table = implied.pop() if len(implied) == 1 else None
    found = {key: c for key, c in reads.items() if c[0] == table}

    for key in WAVEFORM_WRITE_ADDRESS_KEYS:
        converted = _modicon_value(waveform.get(key))
        if converted is not None and converted[0] == "holding":
            found[key] = converted
    return found


def _check_range(range_: tuple[float, float] | None) -> list[tuple[str, str]]:
    if range_ is not None and not range_[0] < range_[1]:
        return [
            (
                "range",
                f"expected [low, high] with low < high, found {list(range_)!r}",
            )
        ]
    return []


# --- points and waveforms (inline in a device or in a device profile) -------


class ModbusPointSettings(StrictModel):
    """One scalar point in Modbus registers or bits.

    ``address`` is the zero-based offset in ``table``. A Modicon-style number
    (40001-49999 for holding, 30001-39999 for input registers) is converted
    to its offset, and ``check-config`` reports the conversion, unless the
    device or profile sets ``modicon_addresses = false``.
    """

    table: Literal["holding", "input", "coil", "discrete_input"] = "holding"
    address: ConfigInt = Field(ge=0, le=65535)
    type: Literal[
        "int16",
        "uint16",
        "int32",
        "uint32",
        "int64",
        "uint64",
        "float32",
        "float64",
        "bool",
        "string",
    ] = "uint16"
    count: ConfigInt | None = Field(default=None, ge=1, le=125)
    byte_order: Literal["big", "little"] = "big"
    word_order: Literal["big", "little"] = "big"
    scale: ConfigFloat = 1.0
    offset: ConfigFloat = 0.0
    bit: ConfigInt | None = Field(default=None, ge=0, le=15)
    unit: str = ""
    range: tuple[RangeBoundFloat, RangeBoundFloat] | None = None
    asset: Identifier | None = None

    @model_validator(mode="before")
    @classmethod
    def _convert_modicon_address(cls, data: Any) -> Any:
        # A register table stated explicitly and different from the one the
        # number implies means the number is a real offset; keep it.
        if not isinstance(data, Mapping):
            return data
        converted = _modicon_value(data.get("address"))
        if converted is None or data.get("table", converted[0]) != converted[0]:
            return data
        return {**data, "table": converted[0], "address": converted[1]}

    @model_validator(mode="after")
    def _check_layout(self) -> ModbusPointSettings:
        problems = _check_range(self.range)
        bit_table = self.table in ("coil", "discrete_input")
        if bit_table and self.type != "bool":
            problems.append(
                (
                    "type",
                    f"a {self.table} holds single bits, so expected type = 'bool', "
                    f"found {self.type!r}",
                )
            )
        if self.bit is not None and (bit_table or self.type != "bool"):
            problems.append(
                (
                    "bit",
                    "bit selects one bit of a register and needs type = 'bool' in "
                    f"a holding or input table, found type = {self.type!r} in "
                    f"table = {self.table!r}",
                )
            )
        problems += self._check_count()
        raise_problems(problems)
        return self

    def _check_count(self) -> list[tuple[str, str]]:
        if self.type == "string":
            if self.count is None:
                return [
                    (
                        "count",
                        "a string needs count = <registers> (2 characters each), "
                        "found no count",
                    )
                ]
            needed = self.count
        elif self.table in ("coil", "discrete_input"):
            needed = self.count or 1
        else:
            needed = REGISTER_COUNTS[self.type]
            if self.count is not None and self.count != needed:
                plural = "register" if needed == 1 else "registers"
                return [
                    (
                        "count",
                        f"{self.type} needs {needed} {plural}, found count = "
                        f"{self.count}",
                    )
                ]
        last = self.address + needed - 1
        if last > 65535:
            return [
                (
                    "address",
                    f"expected the point to end at offset 65535 or below, found "
                    f"address {self.address} + {needed} registers ending at {last}",
                )
            ]
        return []

    @property
    def register_count(self) -> int:
        """Registers (or bits) the point occupies."""
        if self.count is not None:
            return self.count
        if self.table in ("coil", "discrete_input"):
            return 1
        return REGISTER_COUNTS[self.type]


class ModbusWaveformSettings(StrictModel):
    """A waveform capture block; see ``drivers.spec.ModbusWaveformSpec``.

    Every ``*_address`` is a zero-based offset. Modicon numbers (40001-49999
    for holding, 30001-39999 for input registers) are converted by the
    rules of :func:`waveform_modicon_offsets`, and ``check-config``
    reports each conversion, unless the device or profile sets
    ``modicon_addresses = false``.
    """

    table: Literal["holding", "input"] = "input"
    block_address: ConfigInt = Field(ge=0)
    sample_type: Literal["int16", "float32"] = "float32"
    max_samples: ConfigInt = Field(ge=16, le=1_048_576)
    sample_count_address: ConfigInt = Field(ge=0, le=65535)
    sample_count_type: Literal["uint16", "uint32"] = "uint32"
    sample_rate_address: ConfigInt = Field(ge=0, le=65535)
    sample_rate_type: Literal["uint16", "uint32", "float32"] = "float32"
    sequence_address: ConfigInt = Field(ge=0, le=65535)
    ready_address: ConfigInt | None = Field(default=None, ge=0, le=65535)
    trigger_address: ConfigInt | None = Field(default=None, ge=0, le=65535)
    rpm_address: ConfigInt | None = Field(default=None, ge=0, le=65535)
    rpm_type: Literal["uint16", "uint32", "float32"] = "float32"
    byte_order: Literal["big", "little"] = "big"
    word_order: Literal["big", "little"] = "big"
    scale: ConfigFloat = 1.0
    unit: Literal["g", "m/s2"] = "g"
    chunk_registers: ConfigInt = Field(default=120, ge=2, le=125)
    ready_timeout: PositiveDurationS = 5.0
    capture_length_address: ConfigInt | None = Field(default=None, ge=0, le=65535)
    capture_samples: ConfigInt | None = Field(default=None, ge=16)
    page_address: ConfigInt | None = Field(default=None, ge=0, le=65535)
    page_samples: ConfigInt | None = Field(default=None, ge=1)
    asset: Identifier | None = None

    @model_validator(mode="before")
    @classmethod
    def _convert_modicon_addresses(cls, data: Any) -> Any:
        if not isinstance(data, Mapping):
            return data
        converted = waveform_modicon_offsets(data)
        if not converted:
            return data
        update = {key: offset for key, (_, offset) in converted.items()}
        read_tables = [
            table
            for key, (table, _) in converted.items()
            if key in WAVEFORM_READ_ADDRESS_KEYS
        ]
        if read_tables and "table" not in data:
            # Every converted read address names the same table.
            update["table"] = read_tables[0]
        return {**data, **update}

    @model_validator(mode="after")
    def _check_capture(self) -> ModbusWaveformSettings:
        problems = self._check_modicon_tables()
        if (self.page_address is None) != (self.page_samples is None):
            problems.append(
                (
                    "page_samples",
                    "paging needs both page_address and page_samples, found "
                    f"page_address = {self.page_address!r} and page_samples = "
                    f"{self.page_samples!r}",
                )
            )
        requested = self.capture_samples
        if requested is not None and requested > self.max_samples:
            problems.append(
                (
                    "capture_samples",
                    f"expected at most max_samples = {self.max_samples}, "
                    f"found {requested}",
                )
            )
        window = self.page_samples or self.max_samples
        last = self.block_address + window * REGISTER_COUNTS[self.sample_type] - 1
        if self.block_address > 65535:
            problems.append(
                (
                    "block_address",
                    f"expected a value <= 65535, found {self.block_address}"
                    + six_digit_modicon_hint(self.block_address, "block_address"),
                )
            )
        elif last > 65535:
            key = "page_samples" if self.page_samples else "max_samples"
            problems.append(
                (
                    key,
                    f"expected the sample block to end at offset 65535 or below, "
                    f"found {window} samples from block_address "
                    f"{self.block_address} ending at {last}; set page_address and "
                    "page_samples to read a longer capture in pages",
                )
            )
        raise_problems(problems)
        return self

    def _check_modicon_tables(self) -> list[tuple[str, str]]:
        # Numbers of both tables stay unconverted, because a waveform reads
        # one table and no ``table`` key chooses which.
        if "table" in self.model_fields_set:
            return []
        numbers = {
            key: converted
            for key in WAVEFORM_READ_ADDRESS_KEYS
            if (converted := _modicon_value(getattr(self, key))) is not None
        }
        if len({table for table, _ in numbers.values()}) < 2:
            return []
        listed = ", ".join(
            f"{key} = {getattr(self, key)} ({table})"
            for key, (table, _) in numbers.items()
        )
        return [
            (
                "table",
                "expected the Modicon register numbers of one table, found "
                f"{listed}; set table = 'input' or 'holding', or give "
                "zero-based offsets",
            )
        ]


class OpcUaNodeSettings(StrictModel):
    """A node by ``node_id`` (``nsu=URI;s=Name``) or by ``browse_path``."""

    node_id: str | None = None
    browse_path: list[str] | None = None

    @model_validator(mode="after")
    def _check_node(self) -> OpcUaNodeSettings:
        raise_problems(self._node_problems())
        return self

    def _node_problems(self) -> list[tuple[str, str]]:
        if (self.node_id is None) == (self.browse_path is None):
            found = "both" if self.node_id is not None else "neither"
            return [
                (
                    "node_id",
                    f"expected exactly one of node_id or browse_path, found {found}",
                )
            ]
        if self.browse_path is not None and not self.browse_path:
            return [("browse_path", "expected at least one name, found []")]
        match = _BARE_NAMESPACE_INDEX.search(self.node_id or "")
        if match and match.group(1) != "0":
            return [
                (
                    "node_id",
                    f"namespace indexes can change when the server restarts, found "
                    f"{self.node_id!r}; write nsu=<namespace URI>;... or use "
                    "browse_path",
                )
            ]
        return []


class OpcUaPointSettings(OpcUaNodeSettings):
    unit: str = ""
    scale: ConfigFloat = 1.0
    offset: ConfigFloat = 0.0
    range: tuple[RangeBoundFloat, RangeBoundFloat] | None = None
    asset: Identifier | None = None

    def _node_problems(self) -> list[tuple[str, str]]:
        return super()._node_problems() + _check_range(self.range)


class OpcUaWaveformSettings(StrictModel):
    samples: OpcUaNodeSettings
    sample_rate: OpcUaNodeSettings
    rpm: OpcUaNodeSettings | None = None
    sequence: OpcUaNodeSettings | None = None
    unit: Literal["g", "m/s2"] = "g"
    scale: ConfigFloat = 1.0
    asset: Identifier | None = None


# --- devices ---------------------------------------------------------------


_IDENTIFIER: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")


def _check_point_prefix(prefix: str) -> str:
    if prefix and _IDENTIFIER.match(prefix) is None:
        raise ValueError(
            "expected letters, digits, '_', '.' and '-', starting with a "
            f"letter or digit (at most 63 characters), found {prefix!r}"
        )
    return prefix


class DeviceCommon(StrictModel):
    """Settings every device has, whatever its protocol.

    ``profile`` names a file ``<profile>.toml`` in a profile directory; its
    points and waveforms are merged with the ones given inline (inline wins).
    ``asset`` is the asset the device's points belong to unless a point
    names another one.

    A point's or waveform's series is identified by asset and name, so two
    devices on one asset must not give it the same name. ``point_names``
    renames single points and waveforms of the device, and ``point_prefix``
    is put before the name of every other one, whether it comes from the
    profile or is written inline.
    """

    asset: Identifier
    profile: Identifier | None = None
    enabled: bool = True
    poll_interval: PositiveDurationS = 1.0
    waveform_interval: PositiveDurationS = 60.0
    point_prefix: Annotated[str, AfterValidator(_check_point_prefix)] = ""
    point_names: dict[Identifier, Identifier] = {}

    def series_name(self, name: str) -> str:
        """Return the name under which point or waveform ``name`` of this
        device is published and stored."""
        return self.point_names.get(name, self.point_prefix + name)


class ModbusDeviceCommon(DeviceCommon):
    """Settings both Modbus drivers have.

    ``modicon_addresses = false`` keeps numbers such as 40011 as offsets in
    the points and waveforms written in the device's table, for register
    maps whose real offsets lie in 30000-49999 (SunSpec maps start at
    holding offset 40000). A profile's points follow the profile's own
    ``modicon_addresses``.
    """

    modicon_addresses: bool = True

    @model_validator(mode="wrap")
    @classmethod
    def _apply_modicon_switch(
        cls, data: Any, handler: ModelWrapValidatorHandler[ModbusDeviceCommon]
    ) -> ModbusDeviceCommon:
        with modicon_conversion(modicon_switch(data)):
            return handler(data)


class ModbusTcpDeviceSettings(ModbusDeviceCommon):
    driver: Literal["modbus_tcp"]
    host: HostName
    port: ConfigInt = Field(default=502, ge=1, le=65535)
    unit_id: ConfigInt = Field(default=1, ge=0, le=255)
    timeout: PositiveDurationS = 2.0
    connect_timeout: PositiveDurationS = 5.0
    retries: ConfigInt = Field(default=1, ge=0, le=10)
    transaction_id_check: Literal["strict", "lenient"] = "strict"
    max_registers_per_request: ConfigInt = Field(default=125, ge=1, le=125)
    max_gap_registers: ConfigInt = Field(default=10, ge=0, le=124)
    points: dict[Identifier, ModbusPointSettings] = {}
    waveforms: dict[Identifier, ModbusWaveformSettings] = {}


class ModbusRtuDeviceSettings(ModbusDeviceCommon):
    driver: Literal["modbus_rtu"]
    serial_port: str
    baudrate: ConfigInt = Field(default=19200, ge=300, le=1_000_000)
    parity: Literal["N", "E", "O"] = "E"
    stopbits: Annotated[Literal[1, 2], RejectBoolean()] = 1
    bytesize: Annotated[Literal[7, 8], RejectBoolean()] = 8
    unit_id: ConfigInt = Field(default=1, ge=1, le=247)
    timeout: PositiveDurationS = 1.0
    retries: ConfigInt = Field(default=1, ge=0, le=10)
    max_registers_per_request: ConfigInt = Field(default=125, ge=1, le=125)
    max_gap_registers: ConfigInt = Field(default=10, ge=0, le=124)
    points: dict[Identifier, ModbusPointSettings] = {}
    waveforms: dict[Identifier, ModbusWaveformSettings] = {}


class OpcUaDeviceSettings(DeviceCommon):
    """An OPC UA server. ``browse_root`` is prepended to every browse path
    of the profile, so one profile serves many sensors of one server.

    The password for ``username`` comes from the credential
    ``opcua-<device id>-password``, ``CMAGENT_OPCUA_PASSWORD__<DEVICE ID>``
    or ``password_file`` (mode 0600, not a symlink), never from TOML."""

    driver: Literal["opcua"]
    endpoint: OpcUaEndpoint
    security_policy: Literal["None", "Basic256Sha256"] = "None"
    security_mode: Literal["None", "Sign", "SignAndEncrypt"] = "None"
    certificate: Path | None = None
    private_key: Path | None = None
    server_certificate: Path | None = None
    application_uri: str = "urn:cmagent:client"
    username: str | None = None
    password_file: Path | None = None
    browse_root: list[str] = []
    connect_timeout: PositiveDurationS = 5.0
    request_timeout: PositiveDurationS = 4.0
    use_subscriptions: bool = True
    publishing_interval: PositiveDurationS = 1.0
    max_message_size: ConfigInt = Field(default=0, ge=0)
    points: dict[Identifier, OpcUaPointSettings] = {}
    waveforms: dict[Identifier, OpcUaWaveformSettings] = {}

    @model_validator(mode="wrap")
    @classmethod
    def _check_security(
        cls, data: Any, handler: ModelWrapValidatorHandler[OpcUaDeviceSettings]
    ) -> OpcUaDeviceSettings:
        # The security rules are checked on the raw table too, so they are
        # reported along with errors elsewhere in the device, not after.
        try:
            device = handler(data)
        except ValidationError as exc:
            raw = data if isinstance(data, Mapping) else {}
            problems = _security_problems(
                raw.get("security_policy", "None"),
                raw.get("security_mode", "None"),
                raw.get("certificate"),
                raw.get("private_key"),
            )
            raise _with_problems(exc, data, problems) from None
        raise_problems(
            _security_problems(
                device.security_policy,
                device.security_mode,
                device.certificate,
                device.private_key,
            )
        )
        return device


def _security_problems(
    policy: object, mode: object, certificate: object, private_key: object
) -> list[tuple[str, str]]:
    problems: list[tuple[str, str]] = []
    if policy == "None":
        if mode != "None":
            problems.append(
                (
                    "security_mode",
                    f"security_policy = 'None' needs security_mode = 'None', "
                    f"found {mode!r}",
                )
            )
        return problems
    if mode == "None":
        problems.append(
            (
                "security_mode",
                f"{policy} needs 'Sign' or 'SignAndEncrypt', found 'None'",
            )
        )
    for key, value in (("certificate", certificate), ("private_key", private_key)):
        if value is None:
            problems.append((key, f"{policy} needs {key} = <file path>, found none"))
    return problems


def _with_problems(
    exc: ValidationError, data: Any, problems: list[tuple[str, str]]
) -> ValidationError:
    """Return ``exc`` with one more error carrying ``problems``, if any."""
    if not problems:
        return exc
    line_errors: list[Any] = [
        {
            "type": e["type"],
            "loc": e["loc"],
            "input": e["input"],
            "ctx": e.get("ctx", {}),
        }
        for e in exc.errors()
    ]
    line_errors.append(
        {
            "type": "value_error",
            "loc": (),
            "input": data,
            "ctx": {"error": SettingsRuleError(problems)},
        }
    )
    try:
        return ValidationError.from_exception_data(exc.title, line_errors)
    except (KeyError, TypeError):
        return exc


DeviceSettings = Annotated[
    ModbusTcpDeviceSettings | ModbusRtuDeviceSettings | OpcUaDeviceSettings,
    Field(discriminator="driver"),
]


# --- assets and health -------------------------------------------------------
