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
from collections.abc import Mapping
from pathlib import Path
from typing import Final

from agent.logging_setup import register_secret
from agent.settings import AgentSettingsModel, OpcUaDeviceSettings
from agent.uplink.token import LoadedSecret, load_secret
from drivers.spec import DeviceSpec, OpcUaSpec

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
