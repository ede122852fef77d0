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
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Final, Literal

from pydantic import (
    Field,
    PrivateAttr,
    SecretStr,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from agent.settings_devices import (
    REGISTER_COUNTS,
    DeviceCommon,
    DeviceSettings,
    ModbusDeviceCommon,
    ModbusPointSettings,
    ModbusRtuDeviceSettings,
    ModbusTcpDeviceSettings,
    ModbusWaveformSettings,
    OpcUaDeviceSettings,
    OpcUaNodeSettings,
    OpcUaPointSettings,
    OpcUaWaveformSettings,
    modicon_conversion,
    modicon_offset,
    modicon_switch,
    six_digit_modicon_hint,
    waveform_modicon_offsets,
)
from agent.settings_types import (
    ConfigFloat,
    ConfigInt,
    Identifier,
    PositiveDurationS,
    RejectBoolean,
    SettingsRuleError,
    StrictModel,
    raise_problems,
)
from agent.units import DurationS, SizeBytes

__all__ = [
    "REGISTER_COUNTS",
    "SECRET_KEYS",
    "AgentSettingsModel",
    "AssetSettings",
    "BearingGeometrySettings",
    "DeviceCommon",
    "DeviceSettings",
    "EnvironSource",
    "GatewaySettings",
    "HealthSettings",
    "Identifier",
    "LoggingSettings",
    "ModbusDeviceCommon",
    "ModbusPointSettings",
    "ModbusRtuDeviceSettings",
    "ModbusTcpDeviceSettings",
    "ModbusWaveformSettings",
    "MqttSettings",
    "MqttTlsSettings",
    "OilLimitsSettings",
    "OpcUaDeviceSettings",
    "OpcUaNodeSettings",
    "OpcUaPointSettings",
    "OpcUaWaveformSettings",
    "Settings",
    "SettingsRuleError",
    "StoreSettings",
    "StrictModel",
    "ThresholdSettings",
    "UplinkEndpointSettings",
    "UplinkSettings",
    "expand_dotted_keys",
    "load_settings",
    "modicon_conversion",
    "modicon_offset",
    "modicon_switch",
    "settings_sources",
    "six_digit_modicon_hint",
    "waveform_modicon_offsets",
]
"""Device models live in :mod:`agent.settings_devices` and the building
blocks in :mod:`agent.settings_types`; this module re-exports them."""

logger = logging.getLogger(__name__)


class BearingGeometrySettings(StrictModel):
    """Rolling-element bearing geometry; diameters in any one unit."""

    balls: ConfigInt = Field(ge=3, le=100)
    ball_diameter: ConfigFloat = Field(gt=0)
    pitch_diameter: ConfigFloat = Field(gt=0)
    contact_angle_deg: ConfigFloat = Field(default=0.0, ge=0, lt=90)

    @model_validator(mode="after")
    def _check_diameters(self) -> BearingGeometrySettings:
        if self.ball_diameter >= self.pitch_diameter:
            raise_problems(
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
        raise_problems(problems)
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
            raise_problems(
                [("warning", "expected warning, alarm or both, found neither")]
            )
        raise_problems(
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
        raise_problems(problems)
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
        raise_problems(
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


def _report_warning(text: str) -> None:
    """Log a configuration warning, or print it if logging is not set up.

    Commands load the configuration before they set up logging from it,
    and Python's fallback handler would print the event name without its
    fields. The printed line reads like a ``check-config`` warning.
    """
    if logger.hasHandlers():
        logger.warning("settings.warning", extra={"detail": text})
    else:
        print(f"warning: {text}", file=sys.stderr)


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
        _report_warning(warning)
    if report.settings is None or report.problems:
        lines = [str(problem) for problem in report.problems]
        noun = "problem" if len(lines) == 1 else "problems"
        where = str(path) if path is not None else "the environment"
        raise ConfigError(
            f"invalid configuration in {where}: {len(lines)} {noun}", lines
        )
    return report.settings
