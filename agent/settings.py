"""The agent's configuration model.

Sources, highest precedence first: explicit overrides passed to
:func:`load_settings`, ``CMAGENT_`` environment variables (``__`` nests, as
in ``CMAGENT_MQTT__HOST``), the TOML file, then the defaults below. Every
model forbids unknown keys so a misspelled key is an error, not a silent
default. Secrets (the uplink token, the MQTT password) are never read from
TOML: they come from systemd credentials, the environment or a 0600 file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from agent.units import DurationS, SizeBytes

Identifier = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]
"""A name that is safe in MQTT topics, file names and log fields."""


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --- points and waveforms (inline in a device or in a device profile) -------


class ModbusPointSettings(StrictModel):
    """One scalar point in Modbus registers or bits.

    ``address`` is the zero-based offset in ``table``. A Modicon-style number
    (40001-49999 for holding, 30001-39999 for input registers) is converted
    to its offset, and ``check-config`` reports the conversion.
    """

    table: Literal["holding", "input", "coil", "discrete_input"] = "holding"
    address: int = Field(ge=0)
    type: Literal[
        "int16", "uint16", "int32", "uint32", "int64", "uint64",
        "float32", "float64", "bool", "string",
    ] = "uint16"
    count: int | None = Field(default=None, ge=1, le=125)
    byte_order: Literal["big", "little"] = "big"
    word_order: Literal["big", "little"] = "big"
    scale: float = 1.0
    offset: float = 0.0
    bit: int | None = Field(default=None, ge=0, le=15)
    unit: str = ""
    range: tuple[float, float] | None = None
    asset: Identifier | None = None


class ModbusWaveformSettings(StrictModel):
    """A waveform capture block; see ``drivers.spec.ModbusWaveformSpec``."""

    table: Literal["holding", "input"] = "input"
    block_address: int = Field(ge=0)
    sample_type: Literal["int16", "float32"] = "float32"
    max_samples: int = Field(ge=16, le=1_048_576)
    sample_count_address: int = Field(ge=0)
    sample_count_type: Literal["uint16", "uint32"] = "uint32"
    sample_rate_address: int = Field(ge=0)
    sample_rate_type: Literal["uint16", "uint32", "float32"] = "float32"
    sequence_address: int = Field(ge=0)
    ready_address: int | None = Field(default=None, ge=0)
    trigger_address: int | None = Field(default=None, ge=0)
    rpm_address: int | None = Field(default=None, ge=0)
    rpm_type: Literal["uint16", "uint32", "float32"] = "float32"
    byte_order: Literal["big", "little"] = "big"
    word_order: Literal["big", "little"] = "big"
    scale: float = 1.0
    unit: Literal["g", "m/s2"] = "g"
    chunk_registers: int = Field(default=120, ge=2, le=125)
    ready_timeout: DurationS = 5.0
    asset: Identifier | None = None


class OpcUaNodeSettings(StrictModel):
    """A node by ``node_id`` (``nsu=URI;s=Name``) or by ``browse_path``."""

    node_id: str | None = None
    browse_path: list[str] | None = None


class OpcUaPointSettings(OpcUaNodeSettings):
    unit: str = ""
    scale: float = 1.0
    offset: float = 0.0
    range: tuple[float, float] | None = None
    asset: Identifier | None = None


class OpcUaWaveformSettings(StrictModel):
    samples: OpcUaNodeSettings
    sample_rate: OpcUaNodeSettings
    rpm: OpcUaNodeSettings | None = None
    sequence: OpcUaNodeSettings | None = None
    unit: Literal["g", "m/s2"] = "g"
    scale: float = 1.0
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
    profile: str | None = None
    enabled: bool = True
    poll_interval: DurationS = 1.0
    waveform_interval: DurationS = 60.0


class ModbusTcpDeviceSettings(DeviceCommon):
    driver: Literal["modbus_tcp"]
    host: str
    port: int = Field(default=502, ge=1, le=65535)
    unit_id: int = Field(default=1, ge=0, le=255)
    timeout: DurationS = 2.0
    connect_timeout: DurationS = 5.0
    retries: int = Field(default=1, ge=0, le=10)
    transaction_id_check: Literal["strict", "lenient"] = "strict"
    max_registers_per_request: int = Field(default=125, ge=1, le=125)
    max_gap_registers: int = Field(default=10, ge=0, le=124)
    points: dict[Identifier, ModbusPointSettings] = {}
    waveforms: dict[Identifier, ModbusWaveformSettings] = {}


class ModbusRtuDeviceSettings(DeviceCommon):
    driver: Literal["modbus_rtu"]
    serial_port: str
    baudrate: int = Field(default=19200, ge=300, le=1_000_000)
    parity: Literal["N", "E", "O"] = "E"
    stopbits: Literal[1, 2] = 1
    bytesize: Literal[7, 8] = 8
    unit_id: int = Field(default=1, ge=1, le=247)
    timeout: DurationS = 1.0
    retries: int = Field(default=1, ge=0, le=10)
    max_registers_per_request: int = Field(default=125, ge=1, le=125)
    max_gap_registers: int = Field(default=10, ge=0, le=124)
    points: dict[Identifier, ModbusPointSettings] = {}
    waveforms: dict[Identifier, ModbusWaveformSettings] = {}


class OpcUaDeviceSettings(DeviceCommon):
    """An OPC UA server. ``browse_root`` is prepended to every browse path
    of the profile, so one profile serves many sensors of one server."""

    driver: Literal["opcua"]
    endpoint: str = Field(pattern=r"^opc\.tcp://")
    security_policy: Literal["None", "Basic256Sha256"] = "None"
    security_mode: Literal["None", "Sign", "SignAndEncrypt"] = "None"
    certificate: Path | None = None
    private_key: Path | None = None
    server_certificate: Path | None = None
    application_uri: str = "urn:cmagent:client"
    username: str | None = None
    browse_root: list[str] = []
    connect_timeout: DurationS = 5.0
    request_timeout: DurationS = 4.0
    use_subscriptions: bool = True
    publishing_interval: DurationS = 1.0
    max_message_size: int = Field(default=0, ge=0)
    points: dict[Identifier, OpcUaPointSettings] = {}
    waveforms: dict[Identifier, OpcUaWaveformSettings] = {}


DeviceSettings = Annotated[
    ModbusTcpDeviceSettings | ModbusRtuDeviceSettings | OpcUaDeviceSettings,
    Field(discriminator="driver"),
]


# --- assets and health -------------------------------------------------------


class BearingGeometrySettings(StrictModel):
    """Rolling-element bearing geometry; diameters in any one unit."""

    balls: int = Field(ge=3, le=100)
    ball_diameter: float = Field(gt=0)
    pitch_diameter: float = Field(gt=0)
    contact_angle_deg: float = Field(default=0.0, ge=0, lt=90)


class OilLimitsSettings(StrictModel):
    """Oil-condition limits: ISO 4406 codes (>4/>6/>14 µm) and water saturation."""

    iso4406_warning: tuple[int, int, int] = (18, 16, 13)
    iso4406_alarm: tuple[int, int, int] = (20, 18, 15)
    water_saturation_warning_pct: float = Field(default=60.0, ge=0, le=100)
    water_saturation_alarm_pct: float = Field(default=80.0, ge=0, le=100)


class ThresholdSettings(StrictModel):
    """Fixed limits for one indicator; they override the learned baseline."""

    warning: float | None = None
    alarm: float | None = None


class AssetSettings(StrictModel):
    """A monitored machine.

    Shaft speed comes from ``rpm`` (fixed), ``rpm_point`` (a point of this
    asset), or the waveform's own speed when neither is set.
    ``iso_group`` and ``foundation`` select the ISO 20816-3 zone limits.
    """

    name: str = ""
    remote_tag: str | None = None
    iso_group: Literal[1, 2] = 2
    foundation: Literal["rigid", "flexible"] = "rigid"
    rpm: float | None = Field(default=None, gt=0, le=100_000)
    rpm_point: Identifier | None = None
    bearing: str | None = None
    bearing_geometry: BearingGeometrySettings | None = None
    envelope_band_hz: tuple[float, float] | None = None
    oil: OilLimitsSettings | None = None
    thresholds: dict[Identifier, ThresholdSettings] = {}


class HealthSettings(StrictModel):
    """Baselines, severities and alarm hysteresis.

    A learned limit is ``median + factor × 1.4826 × MAD`` over the first
    ``warmup_count`` values of an indicator. An alarm clears only when the
    value falls below ``limit × (1 - hysteresis)``, and a severity must hold
    for ``min_duration`` before it is raised.
    """

    warmup_count: int = Field(default=10, ge=3, le=10_000)
    warning_factor: float = Field(default=6.0, gt=0)
    alarm_factor: float = Field(default=12.0, gt=0)
    hysteresis: float = Field(default=0.1, ge=0, lt=1)
    min_duration: DurationS = 0.0


class StoreSettings(StrictModel):
    """The durable outbox; ``path`` defaults to ``<state_dir>/outbox.db``."""

    path: Path | None = None
    max_bytes: SizeBytes = 200_000_000
    batch_size: int = Field(default=500, ge=1, le=500)


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
    port: int = Field(default=1883, ge=1, le=65535)
    client_id: str | None = None
    clean_session: bool = True
    keepalive: DurationS = 30.0
    protocol: Literal["3.1.1", "5"] = "3.1.1"
    topic_prefix: str = "cmagent/v1"
    qos_readings: Literal[0, 1, 2] = 0
    qos_health: Literal[0, 1, 2] = 0
    qos_alarms: Literal[0, 1, 2] = 1
    username: str | None = None
    password_file: Path | None = None
    password: SecretStr | None = Field(default=None, repr=False, exclude=True)
    tls: MqttTlsSettings = MqttTlsSettings()
    queue_size: int = Field(default=10_000, ge=1)
    reconnect_max: DurationS = 60.0
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
    batch_size: int = Field(default=500, ge=1, le=500)
    max_requests_per_s: float = Field(default=5.0, gt=0)
    request_timeout: DurationS = 10.0
    asset_refresh_interval: DurationS = 3600.0
    retry_max: DurationS = 300.0
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
