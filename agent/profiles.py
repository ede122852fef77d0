"""Device profiles and their conversion into driver specs.

A profile is a TOML file ``<name>.toml`` that describes one sensor model::

    [profile]
    name = "vib-triax-modbus"      # equals the file stem
    vendor = "..."
    model = "..."
    description = "..."
    protocol = "modbus"            # or "opcua"

    [points.velocity_rms_x]        # keys of ModbusPointSettings
    table = "input"
    address = 0
    type = "float32"
    unit = "mm/s"

    [waveforms.accel_x]            # keys of ModbusWaveformSettings
    block_address = 100
    ...

A Modbus profile's ``[profile]`` table may set ``modicon_addresses =
false`` to keep numbers such as 40011 as offsets. OPC UA profiles take the
keys of ``OpcUaPointSettings`` and ``OpcUaWaveformSettings``; a device's
``browse_root`` is prepended to every browse path in its profile. A
device's inline points and waveforms replace profile entries of the same
name, and the device's ``point_names`` and ``point_prefix`` then rename
them all.

A profile is searched for in each ``gateway.profile_dirs`` entry (relative
to the configuration file's directory), then ``<config dir>/devices/``,
then the ``config/devices/`` directory shipped with the agent.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal, TypeVar

from pydantic import Field, ModelWrapValidatorHandler, ValidationError, model_validator

import agent
from agent.config_errors import (
    Problem,
    format_key_path,
    pop_secret_keys,
    problems_from_validation,
    read_toml,
    suggest,
)
from agent.errors import ConfigError
from agent.settings import (
    DeviceCommon,
    Identifier,
    ModbusPointSettings,
    ModbusRtuDeviceSettings,
    ModbusTcpDeviceSettings,
    ModbusWaveformSettings,
    OpcUaDeviceSettings,
    OpcUaNodeSettings,
    OpcUaPointSettings,
    OpcUaWaveformSettings,
    Settings,
    StrictModel,
    modicon_conversion,
    modicon_switch,
)
from agent.toml_locator import TomlLocator
from drivers import spec


def _bundled_profile_dir() -> Path:
    # A source checkout or editable install keeps the profiles beside the
    # packages; a wheel installs them as data files under the prefix.
    source_dir = Path(agent.__file__).resolve().parents[1] / "config" / "devices"
    if source_dir.is_dir():
        return source_dir
    return Path(sys.prefix) / "share" / "cmagent" / "devices"


BUNDLED_PROFILE_DIR: Final = _bundled_profile_dir()
"""Profiles shipped with the agent, searched last."""

PROTOCOL_OF_DRIVER: Final = {
    "modbus_tcp": "modbus",
    "modbus_rtu": "modbus",
    "opcua": "opcua",
}

PointSettings = ModbusPointSettings | OpcUaPointSettings
NodeT = TypeVar("NodeT", bound=OpcUaNodeSettings)
WaveformSettings = ModbusWaveformSettings | OpcUaWaveformSettings


class ProfileHeader(StrictModel):
    """The ``[profile]`` table: the sensor model the file describes."""

    name: Identifier
    vendor: str = ""
    model: str = ""
    description: str = ""
    protocol: Literal["modbus", "opcua"]


class ModbusProfileHeader(ProfileHeader):
    """The ``[profile]`` table of a Modbus profile.

    ``modicon_addresses = false`` keeps numbers such as 40011 as offsets in
    the profile's points and waveforms, for register maps whose real
    offsets lie in 30000-49999.
    """

    modicon_addresses: bool = True


class ModbusProfile(StrictModel):
    profile: ModbusProfileHeader
    points: dict[Identifier, ModbusPointSettings] = Field(default_factory=dict)
    waveforms: dict[Identifier, ModbusWaveformSettings] = Field(default_factory=dict)

    @model_validator(mode="wrap")
    @classmethod
    def _apply_modicon_switch(
        cls, data: Any, handler: ModelWrapValidatorHandler[ModbusProfile]
    ) -> ModbusProfile:
        header = data.get("profile") if isinstance(data, Mapping) else None
        with modicon_conversion(modicon_switch(header)):
            return handler(data)


class OpcUaProfile(StrictModel):
    profile: ProfileHeader
    points: dict[Identifier, OpcUaPointSettings] = Field(default_factory=dict)
    waveforms: dict[Identifier, OpcUaWaveformSettings] = Field(default_factory=dict)


DeviceProfile = ModbusProfile | OpcUaProfile


@dataclass(frozen=True, slots=True, kw_only=True)
class LoadedProfile:
    """A profile file as read: the validated model, or the problems found.

    ``data`` is the parsed TOML and ``locator`` finds lines in it, so
    checks made later can still name the profile's lines.
    """

    path: Path
    profile: DeviceProfile | None
    problems: list[Problem] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)
    locator: TomlLocator | None = None

    def line_of(self, path: Sequence[str | int]) -> int:
        return 1 if self.locator is None else self.locator.line_of(tuple(path))


def profile_search_dirs(
    config_dir: Path, profile_dirs: Sequence[Path] = ()
) -> list[Path]:
    """Return the absolute directories searched for profiles, in order."""
    # abspath, unlike resolve, keeps the symbolic links the user wrote.
    base = Path(os.path.abspath(config_dir))
    dirs = [Path(os.path.abspath(base / directory)) for directory in profile_dirs]
    dirs += [base / "devices", BUNDLED_PROFILE_DIR]
    return dirs


def profile_not_found(name: str, search_dirs: Sequence[Path]) -> str:
    """Return the message for a missing profile, with the closest known name."""
    known = sorted(
        {
            candidate.stem
            for directory in search_dirs
            if directory.is_dir()
            for candidate in directory.glob("*.toml")
        }
    )
    searched = ", ".join(str(directory) for directory in search_dirs)
    return (
        f"profile {name!r} not found; searched {searched} for {name}.toml"
        f"{suggest(name, known)}"
    )


def find_profile(name: str, search_dirs: Sequence[Path]) -> Path | None:
    """Return the first ``<name>.toml`` in ``search_dirs``, or None."""
    for directory in search_dirs:
        candidate = directory / f"{name}.toml"
        if candidate.is_file():
            return candidate
    return None


def read_profile(path: Path) -> LoadedProfile:
    """Parse and validate one profile file, collecting every problem."""
    parsed = read_toml(path)
    if isinstance(parsed, Problem):
        return LoadedProfile(path=path, profile=None, problems=[parsed])
    text, data = parsed
    locator = TomlLocator(text)

    def locate(key_path: tuple[str | int, ...]) -> tuple[str, int | None]:
        return str(path), locator.line_of(key_path)

    problems = [
        Problem(
            source=str(path),
            line=locator.line_of(key),
            key_path=format_key_path(key),
            message=message,
        )
        for key, message in pop_secret_keys(data)
    ]
    header = data.get("profile")
    protocol = header.get("protocol") if isinstance(header, dict) else None
    model = OpcUaProfile if protocol == "opcua" else ModbusProfile
    profile: DeviceProfile | None = None
    try:
        profile = model.model_validate(data)
    except ValidationError as exc:
        problems += problems_from_validation(exc, model, locate)

    if profile is not None and profile.profile.name != path.stem:
        problems.append(
            Problem(
                source=str(path),
                line=locator.line_of(("profile", "name")),
                key_path="profile.name",
                message=f"expected the file name {path.stem!r}, found "
                f"{profile.profile.name!r}",
            )
        )
    return LoadedProfile(
        path=path,
        profile=None if problems else profile,
        problems=problems,
        data=data,
        locator=locator,
    )


# --- merging -----------------------------------------------------------------


def _rooted(node: NodeT, root: Sequence[str]) -> NodeT:
    if node.browse_path is None or not root:
        return node
    return node.model_copy(update={"browse_path": [*root, *node.browse_path]})


def _rooted_waveform(
    waveform: OpcUaWaveformSettings, root: Sequence[str]
) -> OpcUaWaveformSettings:
    update: dict[str, Any] = {}
    for key in ("samples", "sample_rate", "rpm", "sequence"):
        node = getattr(waveform, key)
        if node is not None:
            update[key] = _rooted(node, root)
    return waveform.model_copy(update=update)


@dataclass(frozen=True, slots=True, kw_only=True)
class DeviceEntry:
    """A point or waveform of a device, after its profile is applied.

    ``name`` is the key written in the profile or the device's table, and
    ``series`` the name its values are published and stored under.
    """

    kind: Literal["points", "waveforms"]
    name: str
    series: str
    settings: PointSettings | WaveformSettings
    from_profile: bool


def _profile_entries(
    device: DeviceCommon, profile: DeviceProfile | None
) -> tuple[dict[str, PointSettings], dict[str, WaveformSettings]]:
    points: dict[str, PointSettings] = {}
    waveforms: dict[str, WaveformSettings] = {}
    if isinstance(device, OpcUaDeviceSettings) and isinstance(profile, OpcUaProfile):
        root = device.browse_root
        for name, point in profile.points.items():
            points[name] = _rooted(point, root)
        for name, waveform in profile.waveforms.items():
            waveforms[name] = _rooted_waveform(waveform, root)
    elif not isinstance(device, OpcUaDeviceSettings) and isinstance(
        profile, ModbusProfile
    ):
        points.update(profile.points)
        waveforms.update(profile.waveforms)
    return points, waveforms


def device_entries(
    device: DeviceCommon, profile: DeviceProfile | None
) -> list[DeviceEntry]:
    """Return the device's points and waveforms: profile first, inline wins.

    A profile of the other protocol contributes nothing; ``check-config``
    reports that mismatch.
    """
    profile_points, profile_waveforms = _profile_entries(device, profile)
    points = _entries(device, "points", profile_points, _inline_points(device))
    waveforms = _entries(
        device, "waveforms", profile_waveforms, _inline_waveforms(device)
    )
    return points + waveforms


def _inline_points(device: DeviceCommon) -> Mapping[str, PointSettings]:
    """Return the points written in the device's own table."""
    points: Mapping[str, PointSettings] = getattr(device, "points", {})
    return points


def _inline_waveforms(device: DeviceCommon) -> Mapping[str, WaveformSettings]:
    """Return the waveforms written in the device's own table."""
    waveforms: Mapping[str, WaveformSettings] = getattr(device, "waveforms", {})
    return waveforms


def _entries(
    device: DeviceCommon,
    kind: Literal["points", "waveforms"],
    from_profile: Mapping[str, PointSettings | WaveformSettings],
    inline: Mapping[str, PointSettings | WaveformSettings],
) -> list[DeviceEntry]:
    merged = {**from_profile, **inline}
    return [
        DeviceEntry(
            kind=kind,
            name=name,
            series=device.series_name(name),
            settings=settings,
            from_profile=name not in inline,
        )
        for name, settings in merged.items()
    ]


def merge_profile(
    device: DeviceCommon, profile: DeviceProfile | None
) -> tuple[dict[str, PointSettings], dict[str, WaveformSettings]]:
    """Return the device's points and waveforms keyed by series name.

    See :func:`device_entries` for the rules.
    """
    points: dict[str, PointSettings] = {}
    waveforms: dict[str, WaveformSettings] = {}
    for entry in device_entries(device, profile):
        settings = entry.settings
        if isinstance(settings, ModbusPointSettings | OpcUaPointSettings):
            points[entry.series] = settings
        else:
            waveforms[entry.series] = settings
    return points, waveforms


def load_device_profiles(
    settings: Settings, config_dir: Path
) -> dict[str, LoadedProfile]:
    """Load the profile of every device that names one, keyed by device id.

    Raises:
        ConfigError: a profile is missing or invalid, or its protocol does
            not match the device's driver.
    """
    search_dirs = profile_search_dirs(config_dir, settings.gateway.profile_dirs)
    loaded: dict[str, LoadedProfile] = {}
    problems: list[str] = []
    for device_id, device in settings.devices.items():
        if device.profile is None:
            continue
        path = find_profile(device.profile, search_dirs)
        if path is None:
            message = profile_not_found(device.profile, search_dirs)
            problems.append(f"devices.{device_id}.profile: {message}")
            continue
        profile = read_profile(path)
        problems += [str(problem) for problem in profile.problems]
        expected = PROTOCOL_OF_DRIVER[device.driver]
        if profile.profile and profile.profile.profile.protocol != expected:
            problems.append(
                f"{path}: profile.protocol: driver {device.driver!r} of device "
                f"{device_id!r} needs {expected!r}, found "
                f"{profile.profile.profile.protocol!r}"
            )
        loaded[device_id] = profile
    if problems:
        message = f"invalid device profiles: {len(problems)} problems"
        raise ConfigError(message, problems)
    return loaded


def build_device_specs(
    settings: Settings, config_dir: Path | None = None
) -> dict[str, spec.DeviceSpec]:
    """Convert every enabled device into the spec its driver consumes.

    Points and waveforms are the profile's merged with the inline ones;
    each takes its own ``asset`` or else the device's. Relative certificate
    paths start from ``config_dir`` (default: the configuration's
    directory). Disabled devices are left out.

    Raises:
        ConfigError: a profile is missing or invalid.
    """
    config_dir = config_dir or settings.config_dir
    profiles = load_device_profiles(settings, config_dir)
    specs: dict[str, spec.DeviceSpec] = {}
    for device_id, device in settings.devices.items():
        if not device.enabled:
            continue
        loaded = profiles.get(device_id)
        points, waveforms = merge_profile(device, loaded.profile if loaded else None)
        specs[device_id] = _device_spec(
            device_id, device, points, waveforms, config_dir
        )
    return specs


# --- conversion to driver specs ------------------------------------------------


def _modbus_point(
    name: str, asset: str, point: ModbusPointSettings
) -> spec.ModbusPointSpec:
    return spec.ModbusPointSpec(
        name=name,
        asset=point.asset or asset,
        unit=point.unit,
        table=spec.RegisterTable(point.table),
        address=point.address,
        data_type=spec.DataType(point.type),
        count=point.register_count,
        byte_order=spec.Endian(point.byte_order),
        word_order=spec.Endian(point.word_order),
        scale=point.scale,
        offset=point.offset,
        bit=point.bit,
        valid_range=point.range,
    )


def _modbus_waveform(
    name: str, asset: str, waveform: ModbusWaveformSettings
) -> spec.ModbusWaveformSpec:
    return spec.ModbusWaveformSpec(
        name=name,
        asset=waveform.asset or asset,
        unit=waveform.unit,
        table=spec.RegisterTable(waveform.table),
        block_address=waveform.block_address,
        sample_type=spec.DataType(waveform.sample_type),
        max_samples=waveform.max_samples,
        sample_count_address=waveform.sample_count_address,
        sample_count_type=spec.DataType(waveform.sample_count_type),
        sample_rate_address=waveform.sample_rate_address,
        sample_rate_type=spec.DataType(waveform.sample_rate_type),
        sequence_address=waveform.sequence_address,
        ready_address=waveform.ready_address,
        trigger_address=waveform.trigger_address,
        rpm_address=waveform.rpm_address,
        rpm_type=spec.DataType(waveform.rpm_type),
        byte_order=spec.Endian(waveform.byte_order),
        word_order=spec.Endian(waveform.word_order),
        scale=waveform.scale,
        chunk_registers=waveform.chunk_registers,
        ready_timeout_s=waveform.ready_timeout,
        capture_length_address=waveform.capture_length_address,
        capture_samples=waveform.capture_samples,
        page_address=waveform.page_address,
        page_samples=waveform.page_samples,
    )


def _node(node: OpcUaNodeSettings | None) -> spec.OpcUaNodeRef | None:
    if node is None:
        return None
    path = tuple(node.browse_path) if node.browse_path is not None else None
    return spec.OpcUaNodeRef(node_id=node.node_id, browse_path=path)


def _opcua_point(
    name: str, asset: str, point: OpcUaPointSettings
) -> spec.OpcUaPointSpec:
    node = _node(point)
    assert node is not None
    return spec.OpcUaPointSpec(
        name=name,
        asset=point.asset or asset,
        node=node,
        unit=point.unit,
        scale=point.scale,
        offset=point.offset,
        valid_range=point.range,
    )


def _opcua_waveform(
    name: str, asset: str, waveform: OpcUaWaveformSettings
) -> spec.OpcUaWaveformSpec:
    samples = _node(waveform.samples)
    sample_rate = _node(waveform.sample_rate)
    assert samples is not None and sample_rate is not None
    return spec.OpcUaWaveformSpec(
        name=name,
        asset=waveform.asset or asset,
        samples=samples,
        sample_rate=sample_rate,
        unit=waveform.unit,
        rpm=_node(waveform.rpm),
        sequence=_node(waveform.sequence),
        scale=waveform.scale,
    )


def _file(path: Path | None, config_dir: Path) -> str | None:
    return None if path is None else str(config_dir / path)


def _device_spec(
    device_id: str,
    device: DeviceCommon,
    points: dict[str, PointSettings],
    waveforms: dict[str, WaveformSettings],
    config_dir: Path,
) -> spec.DeviceSpec:
    asset = device.asset
    if isinstance(device, OpcUaDeviceSettings):
        return spec.OpcUaSpec(
            device_id=device_id,
            endpoint=device.endpoint,
            security_policy=spec.OpcUaSecurityPolicy(device.security_policy),
            security_mode=spec.OpcUaSecurityMode(device.security_mode),
            certificate_path=_file(device.certificate, config_dir),
            private_key_path=_file(device.private_key, config_dir),
            server_certificate_path=_file(device.server_certificate, config_dir),
            application_uri=device.application_uri,
            username=device.username,
            connect_timeout_s=device.connect_timeout,
            request_timeout_s=device.request_timeout,
            use_subscriptions=device.use_subscriptions,
            publishing_interval_s=device.publishing_interval,
            max_message_size=device.max_message_size,
            points=tuple(
                _opcua_point(name, asset, p)
                for name, p in points.items()
                if isinstance(p, OpcUaPointSettings)
            ),
            waveforms=tuple(
                _opcua_waveform(name, asset, w)
                for name, w in waveforms.items()
                if isinstance(w, OpcUaWaveformSettings)
            ),
        )

    modbus_points = tuple(
        _modbus_point(name, asset, p)
        for name, p in points.items()
        if isinstance(p, ModbusPointSettings)
    )
    modbus_waveforms = tuple(
        _modbus_waveform(name, asset, w)
        for name, w in waveforms.items()
        if isinstance(w, ModbusWaveformSettings)
    )
    if isinstance(device, ModbusTcpDeviceSettings):
        return spec.ModbusTcpSpec(
            device_id=device_id,
            host=device.host,
            port=device.port,
            unit_id=device.unit_id,
            timeout_s=device.timeout,
            connect_timeout_s=device.connect_timeout,
            retries=device.retries,
            transaction_id_check=spec.TransactionIdCheck(device.transaction_id_check),
            max_registers_per_request=device.max_registers_per_request,
            max_gap_registers=device.max_gap_registers,
            points=modbus_points,
            waveforms=modbus_waveforms,
        )
    assert isinstance(device, ModbusRtuDeviceSettings)
    return spec.ModbusRtuSpec(
        device_id=device_id,
        serial_port=device.serial_port,
        baudrate=device.baudrate,
        parity=device.parity,
        stopbits=device.stopbits,
        bytesize=device.bytesize,
        unit_id=device.unit_id,
        timeout_s=device.timeout,
        retries=device.retries,
        max_registers_per_request=device.max_registers_per_request,
        max_gap_registers=device.max_gap_registers,
        points=modbus_points,
        waveforms=modbus_waveforms,
    )
