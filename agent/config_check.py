"""Validation of a whole configuration: file, device profiles, environment.

:func:`inspect_config` collects every problem at once, each with its file,
line and key path, so a technician can fix them all in one pass.
``cmagent check-config`` prints its report and ``load_settings`` raises
``ConfigError`` from it.
"""

from __future__ import annotations

import itertools
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from pydantic import ValidationError

from agent.config_errors import (
    KeyPath,
    Problem,
    field_names,
    format_key_path,
    pop_secret_keys,
    problems_from_validation,
    read_toml,
    resolve_path,
    suggest,
)
from agent.opcua_passwords import OPCUA_PASSWORD_ENV_PREFIX, password_checks
from agent.profiles import (
    PROTOCOL_OF_DRIVER,
    DeviceEntry,
    LoadedProfile,
    device_entries,
    find_profile,
    merge_profile,
    profile_not_found,
    profile_search_dirs,
    read_profile,
)
from agent.settings import (
    DeviceCommon,
    EnvironSource,
    Settings,
    expand_dotted_keys,
    modicon_offset,
    modicon_switch,
    settings_sources,
    waveform_modicon_offsets,
)
from agent.toml_locator import TomlLocator

ENV_PREFIX = "CMAGENT_"


@dataclass(frozen=True, slots=True, kw_only=True)
class ConfigReport:
    """Result of :func:`inspect_config`.

    ``settings`` is None when the configuration could not be validated.
    ``notes`` are conversions worth knowing about (not errors) and
    ``warnings`` are problems that do not stop the agent.
    """

    settings: Settings | None
    problems: list[Problem] = field(default_factory=list)
    notes: list[Problem] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    point_count: int = 0
    waveform_count: int = 0

    @property
    def ok(self) -> bool:
        return self.settings is not None and not self.problems

    def summary(self) -> str:
        """Return the one-line summary of a valid configuration."""
        settings = self.settings
        counts = [
            (len(settings.devices) if settings else 0, "device"),
            (len(settings.assets) if settings else 0, "asset"),
            (self.point_count, "point"),
            (self.waveform_count, "waveform"),
        ]
        parts = [f"{n} {noun}{'' if n == 1 else 's'}" for n, noun in counts]
        return "config OK: " + ", ".join(parts)


# --- environment -------------------------------------------------------------


def _is_leaf(annotations: Sequence[Any]) -> bool:
    return (
        bool(annotations)
        and not field_names(annotations)
        and all(
            getattr(annotation, "__origin__", None) is not dict
            for annotation in annotations
        )
    )


def _setting_path(name: str) -> list[Any]:
    parts = name.lower().split("__")
    if not all(parts):
        return []
    return resolve_path(Settings, parts)


def _respell(name: str) -> str | None:
    """Find the setting a variable meant when it used ``_`` for ``__``."""
    # Only lone underscores are candidates; at most 10 keep this at 1023 tries.
    singles = [match.start() for match in re.finditer(r"(?<!_)_(?!_)", name)][:10]
    best: tuple[bool, int, str] | None = None
    for size in range(1, len(singles) + 1):
        for chosen in itertools.combinations(singles, size):
            chars = list(name)
            for index in chosen:
                chars[index] = "__"
            candidate = "".join(chars)
            annotations = _setting_path(candidate)
            if not annotations:
                continue
            rank = (not _is_leaf(annotations), size, candidate)
            best = rank if best is None or rank < best else best
    return None if best is None else ENV_PREFIX + best[2].upper()


def environment_warnings(environ: Mapping[str, str]) -> list[str]:
    """Warn about each ``CMAGENT_`` variable that matches no setting.

    Variables without the prefix are ignored. A variable that would match
    with ``__`` in place of a ``_`` gets that spelling as a suggestion.
    """
    warnings = []
    for name in sorted(environ):
        if not name.upper().startswith(ENV_PREFIX):
            continue
        rest = name[len(ENV_PREFIX) :]
        if _setting_path(rest):
            continue
        if name.startswith(OPCUA_PASSWORD_ENV_PREFIX):
            # Checked against the devices by opcua_passwords.password_checks.
            continue
        message = f"environment variable {name} matches no setting"
        suggestion = _respell(rest)
        if suggestion:
            message += f"; did you mean {suggestion}? ('__' separates nested keys)"
        else:
            message += (
                "; expected CMAGENT_ followed by the key path in capitals with "
                "'__' between keys, as in CMAGENT_MQTT__HOST"
            )
        warnings.append(message)
    return warnings


# --- locating problems ---------------------------------------------------------


def _env_variable(env_data: Mapping[str, Any], path: KeyPath) -> str | None:
    """Return the variable that set ``path``, if the environment set it."""
    node: Any = env_data
    for depth, key in enumerate(path):
        if not isinstance(node, Mapping) or key not in node:
            return None
        node = node[key]
        if not isinstance(node, Mapping):
            return ENV_PREFIX + "__".join(str(k) for k in path[: depth + 1]).upper()
    return None


@dataclass(frozen=True, slots=True)
class _Locate:
    source: str
    locator: TomlLocator
    env_data: Mapping[str, Any]

    def __call__(self, path: KeyPath) -> tuple[str, int | None]:
        # The environment overrides the file, so a value it set is the one
        # that was checked, even where the file has the same key.
        variable = _env_variable(self.env_data, path)
        if variable is not None:
            return f"environment {variable}", None
        return self.source, self.locator.line_of(path)

    def problem(self, path: KeyPath, message: str) -> Problem:
        source, line = self(path)
        return Problem(
            source=source, line=line, key_path=format_key_path(path), message=message
        )


# --- the check ---------------------------------------------------------------


def inspect_config(
    path: Path | None,
    *,
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> ConfigReport:
    """Validate a configuration file with its profiles and environment.

    Args:
        path: The TOML file; None checks defaults and environment only.
        overrides: Values that beat every other source.
        environ: Environment variables; None means ``os.environ``.

    Returns:
        The report, with the validated settings when there was no problem.
    """
    environ = dict(os.environ) if environ is None else dict(environ)
    warnings = environment_warnings(environ)
    text, data = "", dict[str, Any]()
    if path is not None:
        parsed = read_toml(path)
        if isinstance(parsed, Problem):
            return ConfigReport(settings=None, problems=[parsed], warnings=warnings)
        text, data = parsed
    locate = _Locate(
        source=str(path) if path else "configuration",
        locator=TomlLocator(text),
        env_data=EnvironSource(Settings, environ)(),
    )
    problems = [locate.problem(key, message) for key, message in pop_secret_keys(data)]

    settings: Settings | None = None
    try:
        with settings_sources(data, environ):
            settings = Settings(**expand_dotted_keys(overrides or {}))
    except ValidationError as exc:
        problems += problems_from_validation(exc, Settings, locate)

    config_dir = path.parent if path else Path.cwd()
    profiles, profile_problems = _load_profiles(settings, data, config_dir, locate)
    problems += profile_problems
    notes = _modicon_notes(data, locate, profiles)
    if settings is None:
        return ConfigReport(
            settings=None,
            problems=_in_file_order(problems, locate.source),
            notes=notes,
            warnings=warnings,
        )

    problems += _cross_check(settings, profiles, locate)
    series_problems, series_warnings = _series_checks(settings, profiles, locate)
    problems += series_problems
    problems += _state_dir_problems(settings, locate)
    password_problems, password_warnings = password_checks(
        settings, config_dir=path.parent if path else None, environ=environ
    )
    problems += [locate.problem(key, text) for key, text in password_problems]
    warnings = warnings + series_warnings + password_warnings
    problems = _in_file_order(problems, locate.source)
    object.__setattr__(settings, "_config_path", path)
    settings._warnings.extend(warnings)
    merged = [
        merge_profile(device, _profile_model(profiles.get(device_id)))
        for device_id, device in settings.devices.items()
    ]
    return ConfigReport(
        settings=settings,
        problems=problems,
        notes=notes,
        warnings=warnings,
        point_count=sum(len(points) for points, _ in merged),
        waveform_count=sum(len(waveforms) for _, waveforms in merged),
    )


def _in_file_order(problems: list[Problem], main_source: str) -> list[Problem]:
    """Sort problems by line, the configuration file's before other sources."""
    return sorted(
        problems,
        key=lambda p: (p.source != main_source, p.source, p.line or 0),
    )


def _profile_model(loaded: LoadedProfile | None) -> Any:
    return None if loaded is None else loaded.profile


def _device_tables(
    settings: Settings | None, data: Mapping[str, Any]
) -> dict[str, tuple[Any, Any]]:
    """Return ``{device: (profile name, driver)}`` from settings or raw TOML."""
    if settings is not None:
        return {
            name: (device.profile, device.driver)
            for name, device in settings.devices.items()
        }
    devices = data.get("devices")
    if not isinstance(devices, Mapping):
        return {}
    return {
        name: (table.get("profile"), table.get("driver"))
        for name, table in devices.items()
        if isinstance(table, Mapping)
    }


def _load_profiles(
    settings: Settings | None,
    data: Mapping[str, Any],
    config_dir: Path,
    locate: _Locate,
) -> tuple[dict[str, LoadedProfile], list[Problem]]:
    """Read each device's profile once, even when several devices share it."""
    if settings is not None:
        profile_dirs: Sequence[Any] = settings.gateway.profile_dirs
    else:
        # The file failed validation, so any table may have the wrong type.
        gateway = data.get("gateway")
        raw = gateway.get("profile_dirs") if isinstance(gateway, Mapping) else None
        raw_dirs = raw if isinstance(raw, list) else []
        profile_dirs = [d for d in raw_dirs if isinstance(d, str)]
    search_dirs = profile_search_dirs(config_dir, [Path(d) for d in profile_dirs])

    by_path: dict[Path, LoadedProfile] = {}
    loaded: dict[str, LoadedProfile] = {}
    problems: list[Problem] = []
    for device_id, (name, driver) in _device_tables(settings, data).items():
        if not isinstance(name, str):
            continue
        key = ("devices", device_id, "profile")
        path = find_profile(name, search_dirs)
        if path is None:
            problems.append(locate.problem(key, profile_not_found(name, search_dirs)))
            continue
        if path not in by_path:
            by_path[path] = read_profile(path)
            problems += by_path[path].problems
        profile = by_path[path]
        expected = PROTOCOL_OF_DRIVER.get(driver)
        protocol = profile.profile.profile.protocol if profile.profile else None
        if protocol and expected and protocol != expected:
            problems.append(
                locate.problem(
                    key,
                    f"driver {driver!r} needs a profile with protocol "
                    f"{expected!r}, found {protocol!r} "
                    f"in {path}",
                )
            )
        loaded[device_id] = profile
    return loaded, problems


def _modicon_notes(
    data: Mapping[str, Any], locate: _Locate, profiles: Mapping[str, LoadedProfile]
) -> list[Problem]:
    """Note each Modicon register number that was converted to an offset.

    A device or profile with ``modicon_addresses = false`` converts none.
    """
    notes: list[Problem] = []
    devices = data.get("devices")
    for device_id, table in devices.items() if isinstance(devices, Mapping) else ():
        if not modicon_switch(table):
            continue
        prefix = ("devices", device_id)
        for path, text in _address_notes(table, prefix):
            notes.append(locate.problem(path, text))
    seen: set[Path] = set()
    for profile in profiles.values():
        if profile.path in seen:
            continue
        seen.add(profile.path)
        if not modicon_switch(profile.data.get("profile")):
            continue
        for path, text in _address_notes(profile.data, ()):
            notes.append(
                Problem(
                    source=str(profile.path),
                    line=profile.line_of(path),
                    key_path=format_key_path(path),
                    message=text,
                )
            )
    return notes


def _address_notes(table: Any, prefix: KeyPath) -> list[tuple[KeyPath, str]]:
    return _point_notes(table, prefix) + _waveform_notes(table, prefix)


def _modicon_note(address: int, register_table: str, offset: int) -> str:
    return (
        f"note: {address} is a Modicon {register_table}-register number; "
        f"using {register_table} offset {offset}"
    )


def _point_notes(table: Any, prefix: KeyPath) -> list[tuple[KeyPath, str]]:
    points = table.get("points") if isinstance(table, Mapping) else None
    if not isinstance(points, Mapping):
        return []
    found = []
    for name, point in points.items():
        if not isinstance(point, Mapping):
            continue
        address = point.get("address")
        if not isinstance(address, int) or isinstance(address, bool):
            continue
        converted = modicon_offset(address)
        if converted is None or point.get("table", converted[0]) != converted[0]:
            continue
        register_table, offset = converted
        found.append(
            (
                (*prefix, "points", name, "address"),
                _modicon_note(address, register_table, offset),
            )
        )
    return found


def _waveform_notes(table: Any, prefix: KeyPath) -> list[tuple[KeyPath, str]]:
    waveforms = table.get("waveforms") if isinstance(table, Mapping) else None
    if not isinstance(waveforms, Mapping):
        return []
    found = []
    for name, waveform in waveforms.items():
        if not isinstance(waveform, Mapping):
            continue
        converted = waveform_modicon_offsets(waveform)
        for key, (register_table, offset) in converted.items():
            found.append(
                (
                    (*prefix, "waveforms", name, key),
                    _modicon_note(waveform[key], register_table, offset),
                )
            )
    return found


# --- cross-checks ------------------------------------------------------------


def _bearing_problem(bearing: str) -> str | None:
    """Return why ``bearing`` is not in the catalogue, or None when it is."""
    from dsp.bearings import bearing_by_model, known_bearings

    try:
        bearing_by_model(bearing)
    except KeyError:
        known = known_bearings()
        return (
            f"unknown bearing {bearing!r}; expected one of "
            f"{', '.join(map(repr, known))} or a [bearing_geometry] table"
            f"{suggest(bearing, known)}"
        )
    return None


def _health_indicators() -> list[str]:
    """Return the indicator names the health monitor judges without a point."""
    from agent.health import (
        BASELINED_INDICATORS,
        BEARING_FAULT_INDICATOR,
        OIL_CODE_INDICATORS,
        WATER_SATURATION_INDICATOR,
    )

    names = {
        *BASELINED_INDICATORS,
        *OIL_CODE_INDICATORS,
        WATER_SATURATION_INDICATOR,
        BEARING_FAULT_INDICATOR,
    }
    return sorted(names)


def _threshold_problems(
    asset_id: str, names: Sequence[str], points: Sequence[str], locate: _Locate
) -> list[Problem]:
    """Report thresholds that name neither an indicator nor a point.

    A threshold on a point of the asset makes health judge that point, so
    the valid names are the indicators plus the asset's own point names.
    """
    indicators = _health_indicators()
    valid = [*indicators, *points]
    problems = []
    for name in names:
        if name in valid:
            continue
        problems.append(
            locate.problem(
                ("assets", asset_id, "thresholds", name),
                f"unknown indicator {name!r}; expected one of "
                f"{', '.join(map(repr, indicators))} or a point of asset "
                f"{asset_id!r} ({', '.join(map(repr, points)) or 'it has none'})"
                f"{suggest(name, valid)}",
            )
        )
    return problems


def _cross_check(
    settings: Settings, profiles: Mapping[str, LoadedProfile], locate: _Locate
) -> list[Problem]:
    """Check references between tables: assets, rpm points, bearings and
    threshold names."""
    problems: list[Problem] = []
    assets = list(settings.assets)
    choices = ", ".join(repr(a) for a in assets) or "none are defined"

    def check_asset(path: KeyPath, asset: str) -> None:
        if asset not in settings.assets:
            problems.append(
                locate.problem(
                    path,
                    f"unknown asset {asset!r}; expected one of the [assets] "
                    f"tables ({choices}){suggest(asset, assets)}",
                )
            )

    points_of_asset: dict[str, list[str]] = {}
    for device_id, device in settings.devices.items():
        check_asset(("devices", device_id, "asset"), device.asset)
        points, waveforms = merge_profile(
            device, _profile_model(profiles.get(device_id))
        )
        for kind, entries in (("points", points), ("waveforms", waveforms)):
            for name, entry in entries.items():
                if entry.asset is not None:
                    path = ("devices", device_id, kind, name, "asset")
                    check_asset(path, entry.asset)
        for name, point in points.items():
            points_of_asset.setdefault(point.asset or device.asset, []).append(name)

    for asset_id, asset in settings.assets.items():
        own = points_of_asset.get(asset_id, [])
        if asset.rpm_point is not None and asset.rpm_point not in own:
            problems.append(
                locate.problem(
                    ("assets", asset_id, "rpm_point"),
                    f"expected a point of asset {asset_id!r} "
                    f"({', '.join(map(repr, own)) or 'it has none'}), found "
                    f"{asset.rpm_point!r}{suggest(asset.rpm_point, own)}",
                )
            )
        bearing_problem = asset.bearing and _bearing_problem(asset.bearing)
        if bearing_problem:
            path = ("assets", asset_id, "bearing")
            problems.append(locate.problem(path, bearing_problem))
        problems += _threshold_problems(asset_id, list(asset.thresholds), own, locate)
    return problems


# --- series names --------------------------------------------------------------

MAX_NAME_LENGTH: Final = 64
"""Maximum length of a point name, as the ``Identifier`` type allows."""


@dataclass(frozen=True, slots=True, kw_only=True)
class _Series:
    """A point or waveform of a device and the place it is written."""

    device_id: str
    entry: DeviceEntry
    written_at: str
    report_path: KeyPath

    def describe(self) -> str:
        kind = self.entry.kind.removesuffix("s")
        return (
            f"device {self.device_id!r} ({kind} {self.entry.name!r}, {self.written_at})"
        )


def _series_of_device(
    device_id: str,
    device: DeviceCommon,
    loaded: LoadedProfile | None,
    locate: _Locate,
) -> list[_Series]:
    found = []
    for entry in device_entries(device, _profile_model(loaded)):
        if entry.from_profile and loaded is not None:
            line = loaded.line_of((entry.kind, entry.name))
            written_at = f"{loaded.path}:{line}"
            report_path: KeyPath = ("devices", device_id, "profile")
        else:
            report_path = ("devices", device_id, entry.kind, entry.name)
            source, line_or_none = locate(report_path)
            written_at = source if line_or_none is None else f"{source}:{line_or_none}"
        found.append(
            _Series(
                device_id=device_id,
                entry=entry,
                written_at=written_at,
                report_path=report_path,
            )
        )
    return found


def _clash_message(asset: str, first: _Series, second: _Series) -> str:
    series = second.entry.series
    new_name = f"{second.device_id}_{second.entry.name}"
    return (
        f"expected each point name once per asset, found {series!r} of asset "
        f"{asset!r} twice: {first.describe()} and {second.describe()}, so "
        "their values would mix in one measurement series; give one a new "
        f'name, as with point_names = {{ {second.entry.name} = "{new_name}" }} '
        f"or a point_prefix in [devices.{second.device_id}]"
    )


def _series_checks(
    settings: Settings, profiles: Mapping[str, LoadedProfile], locate: _Locate
) -> tuple[list[Problem], list[str]]:
    """Check the names the devices' points and waveforms are stored under.

    The outbox and MQTT identify a series by asset and point name only,
    so two points or waveforms with one name on one asset are rejected,
    whichever devices and files they come from. Disabled devices are left
    out, because they produce no values.

    Returns:
        The problems, and warnings for renamed points that health judges
        by their profile names.
    """
    problems: list[Problem] = []
    warnings: list[str] = []
    first_of: dict[tuple[str, str], _Series] = {}
    for device_id, device in settings.devices.items():
        loaded = profiles.get(device_id)
        found = _series_of_device(device_id, device, loaded, locate)
        problems += _point_name_problems(device_id, device, loaded, found, locate)
        warnings += _renamed_health_points(device_id, device, found, locate)
        if not device.enabled:
            continue
        for series in found:
            asset = series.entry.settings.asset or device.asset
            key = (asset, series.entry.series)
            first = first_of.setdefault(key, series)
            if first is not series:
                message = _clash_message(asset, first, series)
                problems.append(locate.problem(series.report_path, message))
    return problems, warnings


def _point_name_problems(
    device_id: str,
    device: DeviceCommon,
    loaded: LoadedProfile | None,
    found: Sequence[_Series],
    locate: _Locate,
) -> list[Problem]:
    """Report unknown ``point_names`` keys and series names that are too
    long."""
    problems = []
    names = [series.entry.name for series in found]
    # Without its profile, the device's names are unknown, and the missing
    # profile is reported already.
    profile_missing = device.profile is not None and (
        loaded is None or loaded.profile is None
    )
    for name in [] if profile_missing else device.point_names:
        if name not in names:
            problems.append(
                locate.problem(
                    ("devices", device_id, "point_names", name),
                    f"expected a point or waveform of device {device_id!r} "
                    f"({', '.join(map(repr, names)) or 'it has none'}), found "
                    f"{name!r}{suggest(name, names)}",
                )
            )
    for series in found:
        if len(series.entry.series) > MAX_NAME_LENGTH:
            problems.append(
                locate.problem(
                    ("devices", device_id, "point_prefix"),
                    f"expected point names of at most {MAX_NAME_LENGTH} "
                    f"characters, found {series.entry.series!r} "
                    f"({len(series.entry.series)}) for "
                    f"{series.entry.name!r}; shorten point_prefix",
                )
            )
    return problems


def _renamed_health_points(
    device_id: str, device: DeviceCommon, found: Sequence[_Series], locate: _Locate
) -> list[str]:
    """Warn when a renamed point is one that health judges by its name."""
    from agent.pipeline_analysis import SCALAR_HEALTH_POINTS

    warnings = []
    for series in found:
        name = series.entry.name
        if name not in SCALAR_HEALTH_POINTS or series.entry.series == name:
            continue
        asset = series.entry.settings.asset or device.asset
        source, line = locate(("devices", device_id))
        where = source if line is None else f"{source}:{line}"
        warnings.append(
            f"{where}: devices.{device_id}: point {name!r} is stored as "
            f"{series.entry.series!r}, so health no longer judges it with the "
            f"oil limits of asset {asset!r}; keep its name with "
            f'point_names = {{ {name} = "{name}" }}'
        )
    return warnings


# --- state directory -----------------------------------------------------------

STATE_DIR_KEY: Final = ("gateway", "state_dir")


def state_dir_file_problem(state_dir: Path) -> str | None:
    """Return why ``state_dir`` cannot be a directory: it, or a parent of
    it, is an existing file. None when no file is in the way."""
    for candidate in (state_dir, *state_dir.parents):
        if not candidate.exists():
            continue
        if candidate.is_dir():
            return None
        message = "expected the agent's state directory, found a file"
        if candidate != state_dir:
            message += f" at {candidate}, so {state_dir} cannot be created"
        return message + "; set gateway.state_dir to a directory"
    return None


def _state_dir_problems(settings: Settings, locate: _Locate) -> list[Problem]:
    """Report a state directory that is, or lies below, an existing file.

    Whether the service user may create or write it is checked when the
    agent starts, because check-config often runs as another user.
    """
    message = state_dir_file_problem(Path(settings.gateway.state_dir))
    return [] if message is None else [locate.problem(STATE_DIR_KEY, message)]


def setting_problem(
    settings: Settings,
    key_path: KeyPath,
    message: str,
    *,
    environ: Mapping[str, str] | None = None,
) -> Problem:
    """Place ``message`` at the file line or variable that set ``key_path``.

    For problems found after loading, such as at start-up. ``environ``
    None means ``os.environ``.
    """
    path = settings.config_path
    parsed = read_toml(path) if path is not None else None
    text = parsed[0] if isinstance(parsed, tuple) else ""
    locate = _Locate(
        source=str(path) if path else "configuration",
        locator=TomlLocator(text),
        env_data=EnvironSource(Settings, environ)(),
    )
    return locate.problem(key_path, message)
