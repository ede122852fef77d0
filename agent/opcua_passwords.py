"""Passwords for OPC UA devices that log in with a user name.

A device's password comes from the first of these that has it:

1. ``$CREDENTIALS_DIRECTORY/opcua-<device id>-password``, a systemd
   credential;
2. ``CMAGENT_OPCUA_PASSWORD__<DEVICE ID>``, where the device id is written
   in capitals with every character other than a letter or digit replaced
   by ``_`` (device ``press-2.ua`` reads ``CMAGENT_OPCUA_PASSWORD__PRESS_2_UA``);
3. the device's ``password_file``, with the same rules as the uplink token
   file: a regular file, not a symbolic link, owned by the agent's user,
   mode 0600 or stricter.

Profiles build :class:`~drivers.spec.OpcUaSpec` records without a password;
:func:`with_opcua_passwords` adds them just before drivers are built, so the
value lives only in the spec the driver receives.
"""

from __future__ import annotations

import dataclasses
import os
import re
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Final

from agent.logging_setup import register_secret
from agent.settings import AgentSettingsModel, OpcUaDeviceSettings
from agent.uplink.token import LoadedSecret, load_secret
from drivers.spec import DeviceSpec, OpcUaSpec

KeyPath = tuple[str, ...]

OPCUA_PASSWORD_ENV_PREFIX: Final = "CMAGENT_OPCUA_PASSWORD__"


def password_credential(device_id: str) -> str:
    """Return the systemd credential name of a device's password."""
    return f"opcua-{device_id}-password"


def password_env_var(device_id: str) -> str:
    """Return the environment variable that holds a device's password."""
    return OPCUA_PASSWORD_ENV_PREFIX + re.sub(r"[^A-Z0-9]", "_", device_id.upper())


def resolve_password_file(
    device: OpcUaDeviceSettings, config_dir: Path | None
) -> Path | None:
    """Return the device's ``password_file``, relative to the config file."""
    path = device.password_file
    if path is None or path.is_absolute() or config_dir is None:
        return path
    return config_dir / path


def load_opcua_password(
    device_id: str,
    password_file: Path | None,
    *,
    environ: Mapping[str, str] = os.environ,
) -> LoadedSecret | None:
    """Load one device's password from credential, environment or file.

    Returns:
        The password, or None when no source provides one.

    Raises:
        ConfigError: a source exists but is unusable (empty, a control
            character, or a file that is a symbolic link, not owned by the
            agent's user or readable by group or others).
    """
    return load_secret(
        password_credential(device_id),
        password_env_var(device_id),
        password_file,
        environ=environ,
    )


def with_opcua_passwords(
    specs: Mapping[str, DeviceSpec],
    settings: AgentSettingsModel,
    *,
    config_dir: Path | None,
    environ: Mapping[str, str] = os.environ,
) -> dict[str, DeviceSpec]:
    """Return ``specs`` with the password of every OPC UA device that has a
    ``username``, each registered for redaction from logs.

    A device with a user name but no password source keeps ``password``
    None and connects with the user name alone.

    Raises:
        ConfigError: a device's password source is unusable.
    """
    result = dict(specs)
    for device_id, spec in specs.items():
        device = settings.devices.get(device_id)
        if not isinstance(spec, OpcUaSpec) or spec.username is None:
            continue
        if not isinstance(device, OpcUaDeviceSettings):
            continue

        password_file = resolve_password_file(device, config_dir)
        loaded = load_opcua_password(device_id, password_file, environ=environ)
        if loaded is None:
            continue

        password = loaded.value.get_secret_value()
        register_secret(password)
        result[device_id] = dataclasses.replace(spec, password=password)
    return result


# --- checks for check-config ----------------------------------------------------


def password_file_problem(path: Path) -> str | None:
    """Return why ``path`` cannot be a password file, or None if it can.

    The owner is not checked, because check-config often runs as another
    user than the agent; the agent checks it when it loads the file.
    """
    try:
        info = path.lstat()
    except FileNotFoundError:
        return f"password file {path} not found; create it with mode 0600"
    except OSError as exc:
        return f"cannot inspect password file {path}: {exc.strerror}"
    if stat.S_ISLNK(info.st_mode):
        return (
            f"password file {path} is a symbolic link, expected a regular "
            "file; point password_file at the file itself"
        )
    if not stat.S_ISREG(info.st_mode):
        return f"password file {path} is not a regular file"
    mode = stat.S_IMODE(info.st_mode)
    if mode & 0o077:
        return (
            f"password file {path} has mode {mode:04o}, expected 0600 or "
            f"stricter; run `chmod 600 {path}`"
        )
    return None


def password_checks(
    settings: AgentSettingsModel,
    *,
    config_dir: Path | None,
    environ: Mapping[str, str],
) -> tuple[list[tuple[KeyPath, str]], list[str]]:
    """Check the password sources of every OPC UA device.

    Returns:
        Problems as (key path, message) pairs: a ``password_file`` that is
        missing, a symbolic link or readable by group or others. Warnings:
        a ``username`` with no password source, and a
        ``CMAGENT_OPCUA_PASSWORD__`` variable that matches no such device.
    """
    problems: list[tuple[KeyPath, str]] = []
    warnings: list[str] = []
    claimed: set[str] = set()
    credentials = environ.get("CREDENTIALS_DIRECTORY")
    for device_id, device in settings.devices.items():
        if not isinstance(device, OpcUaDeviceSettings):
            continue
        env_var = password_env_var(device_id)
        claimed.add(env_var)
        password_file = resolve_password_file(device, config_dir)
        if password_file is not None:
            problem = password_file_problem(password_file)
            if problem is not None:
                problems.append((("devices", device_id, "password_file"), problem))
        if device.username is None:
            continue

        credential = password_credential(device_id)
        has_credential = bool(credentials) and (Path(credentials) / credential).exists()
        if not (has_credential or env_var in environ or password_file):
            warnings.append(
                f"device {device_id!r} has username {device.username!r} but "
                f"no password: provide the systemd credential {credential}, "
                f"set {env_var} or set password_file, unless the server "
                "accepts the user name alone"
            )

    for name in sorted(environ):
        if name.startswith(OPCUA_PASSWORD_ENV_PREFIX) and name not in claimed:
            warnings.append(
                f"environment variable {name} matches no OPC UA device; "
                f"expected {OPCUA_PASSWORD_ENV_PREFIX} followed by a device id "
                "in capitals with '_' for other characters"
            )
    return problems, warnings
