"""The agent's configuration model.

Sources, highest precedence first: explicit overrides passed to
:func:`load_settings`, ``CMAGENT_`` environment variables (``__`` nests, as
in ``CMAGENT_MQTT__HOST``), the TOML file, then the defaults below. Every
model forbids unknown keys so a misspelled key is an error, not a silent
default. Every numeric field rejects a boolean, so a new one is declared
with ``ConfigInt``, ``ConfigFloat`` or ``RejectBoolean``. Secrets (the
uplink token, the MQTT password) are never read from TOML: they come from
systemd credentials, the environment or a 0600 file.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Final, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ModelWrapValidatorHandler,
    PrivateAttr,
    SecretStr,
    ValidationError,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from agent.settings_types import (
    ConfigFloat,
    ConfigInt,
    RangeBoundFloat,
    RejectBoolean,
)
from agent.units import DurationS, PositiveDurationS, SizeBytes

logger = logging.getLogger(__name__)

Identifier = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]
"""A name that is safe in MQTT topics, file names and log fields."""


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SettingsRuleError(ValueError):
    """A rule between fields of one table is broken.

    ``problems`` contains ``(field, message)`` pairs, one per broken rule, so a
    report can name the exact key of each problem, not only the table.
    """

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        super().__init__("; ".join(f"{key}: {text}" for key, text in problems))
        self.problems = tuple(problems)


def _raise_problems(problems: list[tuple[str, str]]) -> None:
    if problems:
        raise SettingsRuleError(problems)


MODICON_TABLES: Final = {3: "input", 4: "holding"}
"""Leading digit of a five-digit Modicon register number and its table."""

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

_BARE_NAMESPACE_INDEX: Final = re.compile(r"(?:^|;)\s*ns=(\d+)\s*;")


def modicon_offset(address: int) -> tuple[str, int] | None:
    """Return ``(table, offset)`` for a Modicon register number, else None.

    30001-39999 are input registers and 40001-49999 holding registers; the
    offset is the number minus 30001 or 40001.
    """
    table = MODICON_TABLES.get(address // 10_000)
    if table is None or address % 10_000 == 0:
        return None
    return table, address % 10_000 - 1


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
    to its offset, and ``check-config`` reports the conversion.
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
        address = data.get("address")
        if not isinstance(address, int) or isinstance(address, bool):
            return data
        converted = modicon_offset(address)
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
        _raise_problems(problems)
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
    """A waveform capture block; see ``drivers.spec.ModbusWaveformSpec``."""

    table: Literal["holding", "input"] = "input"
    block_address: ConfigInt = Field(ge=0)
    sample_type: Literal["int16", "float32"] = "float32"
    max_samples: ConfigInt = Field(ge=16, le=1_048_576)
    sample_count_address: ConfigInt = Field(ge=0)
    sample_count_type: Literal["uint16", "uint32"] = "uint32"
    sample_rate_address: ConfigInt = Field(ge=0)
    sample_rate_type: Literal["uint16", "uint32", "float32"] = "float32"
    sequence_address: ConfigInt = Field(ge=0)
    ready_address: ConfigInt | None = Field(default=None, ge=0)
    trigger_address: ConfigInt | None = Field(default=None, ge=0)
    rpm_address: ConfigInt | None = Field(default=None, ge=0)
    rpm_type: Literal["uint16", "uint32", "float32"] = "float32"
    byte_order: Literal["big", "little"] = "big"
    word_order: Literal["big", "little"] = "big"
    scale: ConfigFloat = 1.0
    unit: Literal["g", "m/s2"] = "g"
    chunk_registers: ConfigInt = Field(default=120, ge=2, le=125)
    ready_timeout: PositiveDurationS = 5.0
    capture_length_address: ConfigInt | None = Field(default=None, ge=0)
    capture_samples: ConfigInt | None = Field(default=None, ge=16)
    page_address: ConfigInt | None = Field(default=None, ge=0)
    page_samples: ConfigInt | None = Field(default=None, ge=1)
    asset: Identifier | None = None

    @model_validator(mode="after")
    def _check_capture(self) -> ModbusWaveformSettings:
        problems: list[tuple[str, str]] = []
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
        if last > 65535:
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
        _raise_problems(problems)
        return self


class OpcUaNodeSettings(StrictModel):
    """A node by ``node_id`` (``nsu=URI;s=Name``) or by ``browse_path``."""

    node_id: str | None = None
    browse_path: list[str] | None = None

    @model_validator(mode="after")
    def _check_node(self) -> OpcUaNodeSettings:
        _raise_problems(self._node_problems())
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


class DeviceCommon(StrictModel):
    """Settings every device has, whatever its protocol.

    ``profile`` names a file ``<profile>.toml`` in a profile directory; its
    points and waveforms are merged with the ones given inline (inline wins).
    ``asset`` is the asset the device's points belong to unless a point
    names another one.
    """

    asset: Identifier
    profile: Identifier | None = None
    enabled: bool = True
    poll_interval: PositiveDurationS = 1.0
    waveform_interval: PositiveDurationS = 60.0


class ModbusTcpDeviceSettings(DeviceCommon):
    driver: Literal["modbus_tcp"]
    host: str
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


class ModbusRtuDeviceSettings(DeviceCommon):
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
    endpoint: str = Field(pattern=r"^opc\.tcp://")
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
        _raise_problems(
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


class BearingGeometrySettings(StrictModel):
    """Rolling-element bearing geometry; diameters in any one unit."""

    balls: ConfigInt = Field(ge=3, le=100)
    ball_diameter: ConfigFloat = Field(gt=0)
    pitch_diameter: ConfigFloat = Field(gt=0)
    contact_angle_deg: ConfigFloat = Field(default=0.0, ge=0, lt=90)

    @model_validator(mode="after")
    def _check_diameters(self) -> BearingGeometrySettings:
        if self.ball_diameter >= self.pitch_diameter:
            _raise_problems(
                [
                    (
                        "ball_diameter",
                        "expected a ball diameter smaller than pitch_diameter = "
                        f"{self.pitch_diameter!r}, found {self.ball_diameter!r}",
                    )
                ]
            )
        return self


class OilLimitsSettings(StrictModel):
    """Oil-condition limits: ISO 4406 codes (>4/>6/>14 µm) and water saturation."""

    iso4406_warning: tuple[ConfigInt, ConfigInt, ConfigInt] = (18, 16, 13)
    iso4406_alarm: tuple[ConfigInt, ConfigInt, ConfigInt] = (20, 18, 15)
    water_saturation_warning_pct: ConfigFloat = Field(default=60.0, ge=0, le=100)
    water_saturation_alarm_pct: ConfigFloat = Field(default=80.0, ge=0, le=100)

    @model_validator(mode="after")
    def _check_order(self) -> OilLimitsSettings:
        problems: list[tuple[str, str]] = []
        pairs = zip(self.iso4406_warning, self.iso4406_alarm, strict=True)
        if any(alarm < warning for warning, alarm in pairs):
            problems.append(
                (
                    "iso4406_alarm",
                    "expected each code >= the one in iso4406_warning = "
                    f"{list(self.iso4406_warning)!r}, found "
                    f"{list(self.iso4406_alarm)!r}",
                )
            )
        problems += _alarm_below_warning(
            "water_saturation_alarm_pct",
            self.water_saturation_alarm_pct,
            "water_saturation_warning_pct",
            self.water_saturation_warning_pct,
        )
        _raise_problems(problems)
        return self


def _alarm_below_warning(
    alarm_key: str, alarm: float | None, warning_key: str, warning: float | None
) -> list[tuple[str, str]]:
    """Report an alarm limit below its warning limit. Health judges limits
    upwards, so a rising value would reach the alarm before the warning."""
    if alarm is None or warning is None or alarm >= warning:
        return []
    return [
        (alarm_key, f"expected a value >= {warning_key} = {warning!r}, found {alarm!r}")
    ]


class ThresholdSettings(StrictModel):
    """Fixed limits for one indicator. They replace every other source of
    limits for it, so at least one of them must be set."""

    warning: ConfigFloat | None = None
    alarm: ConfigFloat | None = None

    @model_validator(mode="after")
    def _check_limits(self) -> ThresholdSettings:
        if self.warning is None and self.alarm is None:
            _raise_problems(
                [("warning", "expected warning, alarm or both, found neither")]
            )
        _raise_problems(
            _alarm_below_warning("alarm", self.alarm, "warning", self.warning)
        )
        return self


class AssetSettings(StrictModel):
    """A monitored machine.

    Shaft speed comes from ``rpm`` (fixed) or ``rpm_point`` (a point of
    this asset), never both, or the waveform's own speed when neither is
    set. ``thresholds`` is keyed by indicator or point name.
    ``iso_group`` and ``foundation`` select the ISO 20816-3 zone limits.
    """

    name: str = ""
    remote_tag: str | None = None
    iso_group: Annotated[Literal[1, 2], RejectBoolean()] = 2
    foundation: Literal["rigid", "flexible"] = "rigid"
    rpm: ConfigFloat | None = Field(default=None, gt=0, le=100_000)
    rpm_point: Identifier | None = None
    bearing: str | None = None
    bearing_geometry: BearingGeometrySettings | None = None
    envelope_band_hz: tuple[ConfigFloat, ConfigFloat] | None = None
    oil: OilLimitsSettings | None = None
    thresholds: dict[Identifier, ThresholdSettings] = {}

    @model_validator(mode="after")
    def _check_choices(self) -> AssetSettings:
        problems: list[tuple[str, str]] = []
        if self.bearing is not None and self.bearing_geometry is not None:
            problems.append(
                (
                    "bearing_geometry",
                    f"expected bearing or bearing_geometry, found both (bearing = "
                    f"{self.bearing!r})",
                )
            )
        if self.rpm is not None and self.rpm_point is not None:
            problems.append(
                (
                    "rpm_point",
                    f"expected rpm or rpm_point, found both (rpm = {self.rpm!r}); "
                    "remove rpm to use the measured speed or rpm_point to use "
                    "the fixed one",
                )
            )
        band = self.envelope_band_hz
        if band is not None and not 0 <= band[0] < band[1]:
            problems.append(
                (
                    "envelope_band_hz",
                    "expected [low, high] in Hz with 0 <= low < high, found "
                    f"{list(band)!r}",
                )
            )
        _raise_problems(problems)
        return self


class HealthSettings(StrictModel):
    """Baselines, severities and alarm hysteresis.

    A learned limit is ``median + factor × 1.4826 × MAD`` over the first
    ``warmup_count`` values of an indicator. An alarm clears only when the
    value falls below ``limit × (1 - hysteresis)``, and a severity must hold
    for ``min_duration`` before it is raised.
    """

    warmup_count: ConfigInt = Field(default=10, ge=3, le=10_000)
    warning_factor: ConfigFloat = Field(default=6.0, gt=0)
    alarm_factor: ConfigFloat = Field(default=12.0, gt=0)
    hysteresis: ConfigFloat = Field(default=0.1, ge=0, lt=1)
    min_duration: DurationS = 0.0

    @model_validator(mode="after")
    def _check_factors(self) -> HealthSettings:
        _raise_problems(
            _alarm_below_warning(
                "alarm_factor",
                self.alarm_factor,
                "warning_factor",
                self.warning_factor,
            )
        )
        return self


class StoreSettings(StrictModel):
    """The durable outbox; ``path`` defaults to ``<state_dir>/outbox.db``."""

    path: Path | None = None
    max_bytes: SizeBytes = 200_000_000
    batch_size: ConfigInt = Field(default=500, ge=1, le=500)


class GatewaySettings(StrictModel):
    id: Identifier = "gateway"
    state_dir: Path = Path("/var/lib/cmagent")
    profile_dirs: list[Path] = []


class MqttTlsSettings(StrictModel):
    enabled: bool = False
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    check_hostname: bool = True


class MqttSettings(StrictModel):
    """Live publishing. The password comes from ``$CREDENTIALS_DIRECTORY/
    mqtt-password``, ``CMAGENT_MQTT__PASSWORD`` or ``password_file``."""

    enabled: bool = True
    host: str = "localhost"
    port: ConfigInt = Field(default=1883, ge=1, le=65535)
    client_id: str | None = None
    clean_session: bool = True
    # paho takes whole seconds, and MQTT allows at most 65535.
    keepalive: PositiveDurationS = Field(default=30.0, ge=1, le=65535)
    protocol: Literal["3.1.1", "5"] = "3.1.1"
    topic_prefix: str = "cmagent/v1"
    qos_readings: Annotated[Literal[0, 1, 2], RejectBoolean()] = 0
    qos_health: Annotated[Literal[0, 1, 2], RejectBoolean()] = 0
    qos_alarms: Annotated[Literal[0, 1, 2], RejectBoolean()] = 1
    username: str | None = None
    password_file: Path | None = None
    password: SecretStr | None = Field(default=None, repr=False, exclude=True)
    tls: MqttTlsSettings = MqttTlsSettings()
    queue_size: ConfigInt = Field(default=10_000, ge=1)
    # Live values come back at most this long after the broker does; a
    # retry every 10 s costs a local broker nothing.
    reconnect_max: PositiveDurationS = Field(default=10.0, ge=1)
    commands_enabled: bool = False


class UplinkEndpointSettings(StrictModel):
    base_url: str | None = None
    token_file: Path | None = None


class UplinkSettings(StrictModel):
    """Delivery to the integration API.

    ``environment`` picks the endpoint in use; sandbox and production have
    separate base URLs and separate tokens. The token comes from
    ``$CREDENTIALS_DIRECTORY/uplink-token``, ``CMAGENT_UPLINK__TOKEN`` or the
    endpoint's ``token_file`` (mode 0600, not a symlink).
    """

    enabled: bool = True
    environment: Literal["sandbox", "production"] = "sandbox"
    sandbox: UplinkEndpointSettings = UplinkEndpointSettings(
        base_url="http://127.0.0.1:8700"
    )
    production: UplinkEndpointSettings = UplinkEndpointSettings()
    token: SecretStr | None = Field(default=None, repr=False, exclude=True)
    assets_path: str = "/api/v1/assets"
    measurements_path: str = "/api/v1/measurements"
    maintenance_requests_path: str = "/api/v1/maintenance-requests"
    batch_size: ConfigInt = Field(default=500, ge=1, le=500)
    max_requests_per_s: ConfigFloat = Field(default=5.0, gt=0)
    request_timeout: PositiveDurationS = 10.0
    asset_refresh_interval: PositiveDurationS = 3600.0
    retry_max: PositiveDurationS = 300.0
    verify_tls: bool = True
    ca_file: Path | None = None


class LoggingSettings(StrictModel):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    format: Literal["auto", "text", "journal", "json"] = "auto"


class AgentSettingsModel(StrictModel):
    """The whole configuration, as validated from every source."""

    gateway: GatewaySettings = GatewaySettings()
    devices: dict[Identifier, DeviceSettings] = {}
    assets: dict[Identifier, AssetSettings] = {}
    health: HealthSettings = HealthSettings()
    store: StoreSettings = StoreSettings()
    mqtt: MqttSettings = MqttSettings()
    uplink: UplinkSettings = UplinkSettings()
    logging: LoggingSettings = LoggingSettings()


# --- loading ---------------------------------------------------------------

SECRET_KEYS: Final = frozenset({"token", "password"})
"""Keys that hold secrets; they are accepted from the environment only."""


@dataclass(frozen=True, slots=True)
class _SourceData:
    toml: Mapping[str, Any]
    environ: Mapping[str, str] | None


_SOURCE_DATA: ContextVar[_SourceData | None] = ContextVar(
    "cmagent_settings_source_data", default=None
)


@contextmanager
def settings_sources(
    toml: Mapping[str, Any], environ: Mapping[str, str] | None
) -> Iterator[None]:
    """Make ``Settings()`` read ``toml`` and ``environ`` within the block.

    ``environ`` None means ``os.environ``.
    """
    token = _SOURCE_DATA.set(_SourceData(toml=toml, environ=environ))
    try:
        yield
    finally:
        _SOURCE_DATA.reset(token)


class _TomlDataSource(PydanticBaseSettingsSource):
    """The already parsed TOML document given to :func:`settings_sources`."""

    def get_field_value(
        self, field: FieldInfo, field_name: str
    ) -> tuple[Any, str, bool]:
        data = _SOURCE_DATA.get()
        value = None if data is None else data.toml.get(field_name)
        return value, field_name, False

    def __call__(self) -> dict[str, Any]:
        data = _SOURCE_DATA.get()
        return {} if data is None else dict(data.toml)


class EnvironSource(EnvSettingsSource):
    """``CMAGENT_`` variables from a given mapping instead of ``os.environ``."""

    def __init__(
        self,
        settings_cls: type[BaseSettings],
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self._environ = environ
        super().__init__(settings_cls)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        environ = self._environ
        if environ is None:
            data = _SOURCE_DATA.get()
            environ = None if data is None else data.environ
        if environ is None:
            return super()._load_env_vars()
        return {name.lower(): value for name, value in environ.items()}


class Settings(AgentSettingsModel, BaseSettings):
    """The configuration with every source applied.

    Build it with :func:`load_settings`. ``settings_warnings`` lists
    problems that do not stop the agent, such as a ``CMAGENT_`` variable
    that matches no setting. ``config_path`` is the TOML file it came from.
    """

    model_config = SettingsConfigDict(
        env_prefix="CMAGENT_",
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
        case_sensitive=False,
    )

    _warnings: list[str] = PrivateAttr(default_factory=list)
    _config_path: Path | None = PrivateAttr(default=None)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (
            init_settings,
            EnvironSource(settings_cls),
            _TomlDataSource(settings_cls),
        )

    @property
    def settings_warnings(self) -> list[str]:
        """Warnings found while loading, one line each."""
        return list(self._warnings)

    @property
    def config_path(self) -> Path | None:
        return self._config_path

    @property
    def config_dir(self) -> Path:
        """Directory relative paths in the configuration start from."""
        if self._config_path is None:
            return Path.cwd()
        return self._config_path.parent


def expand_dotted_keys(overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Turn ``{"mqtt.host": "x"}`` into ``{"mqtt": {"host": "x"}}``."""
    expanded: dict[str, Any] = {}
    for key, value in overrides.items():
        *parents, leaf = key.split(".")
        table = expanded
        for parent in parents:
            table = table.setdefault(parent, {})
        if isinstance(value, Mapping) and isinstance(table.get(leaf), dict):
            table[leaf].update(expand_dotted_keys(value))
        elif isinstance(value, Mapping):
            table[leaf] = expand_dotted_keys(value)
        else:
            table[leaf] = value
    return expanded


def load_settings(
    path: Path | None,
    *,
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Load, validate and cross-check the configuration.

    Args:
        path: The TOML file, or None for defaults and environment only.
        overrides: Values that beat every other source, nested or with
            dotted keys (``{"mqtt.host": "127.0.0.1"}``).
        environ: Environment variables; None means ``os.environ``.

    Raises:
        ConfigError: with ``problems`` listing every problem found, in the
            file, its device profiles or the environment.
    """
    from agent.config_check import inspect_config
    from agent.errors import ConfigError

    report = inspect_config(path, overrides=overrides, environ=environ)
    for warning in report.warnings:
        logger.warning("settings.environment_mismatch", extra={"detail": warning})
    if report.settings is None or report.problems:
        lines = [str(problem) for problem in report.problems]
        noun = "problem" if len(lines) == 1 else "problems"
        where = str(path) if path is not None else "the environment"
        raise ConfigError(
            f"invalid configuration in {where}: {len(lines)} {noun}", lines
        )
    return report.settings
