"""OPC UA device passwords: where they are loaded from and how checked."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from agent.config_check import environment_warnings, inspect_config
from agent.errors import ConfigError
from agent.opcua_passwords import (
    load_opcua_password,
    password_env_var,
    with_opcua_passwords,
)
from agent.pipeline_runtime import load_config
from drivers.spec import OpcUaSpec

DEVICE = "press-2.ua"
ENV_VAR = "CMAGENT_OPCUA_PASSWORD__PRESS_2_UA"


def secret_file(path: Path, value: str, mode: int = 0o600) -> Path:
    path.write_text(value + "\n", encoding="utf-8")
    os.chmod(path, mode)
    return path


def write_config(tmp_path: Path, *device_lines: str) -> Path:
    lines = [
        "[assets.press2]",
        '[devices."press-2.ua"]',
        'driver = "opcua"',
        'endpoint = "opc.tcp://127.0.0.1:4840"',
        'asset = "press2"',
        *device_lines,
        "[mqtt]",
        "enabled = false",
        "[uplink]",
        "enabled = false",
    ]
    path = tmp_path / "agent.toml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


class TestPasswordEnvVar:
    def test_capitals_and_underscores(self) -> None:
        assert password_env_var(DEVICE) == ENV_VAR

    def test_not_flagged_as_unknown_setting(self) -> None:
        assert environment_warnings({ENV_VAR: "x"}) == []


class TestLoadOpcUaPassword:
    def test_credential_beats_environment_and_file(self, tmp_path: Path) -> None:
        credentials = tmp_path / "credentials"
        credentials.mkdir()
        secret_file(credentials / f"opcua-{DEVICE}-password", "from-credential")
        file = secret_file(tmp_path / "password", "from-file")
        environ = {"CREDENTIALS_DIRECTORY": str(credentials), ENV_VAR: "from-env"}

        loaded = load_opcua_password(DEVICE, file, environ=environ)

        assert loaded is not None
        assert loaded.value.get_secret_value() == "from-credential"
        assert loaded.source == f"credential opcua-{DEVICE}-password"

    def test_environment_beats_file(self, tmp_path: Path) -> None:
        file = secret_file(tmp_path / "password", "from-file")

        loaded = load_opcua_password(DEVICE, file, environ={ENV_VAR: "from-env"})

        assert loaded is not None
        assert loaded.value.get_secret_value() == "from-env"

    def test_file_when_nothing_else(self, tmp_path: Path) -> None:
        file = secret_file(tmp_path / "password", "from-file")

        loaded = load_opcua_password(DEVICE, file, environ={})

        assert loaded is not None
        assert loaded.value.get_secret_value() == "from-file"

    def test_none_without_any_source(self) -> None:
        assert load_opcua_password(DEVICE, None, environ={}) is None

    def test_loose_file_mode_rejected(self, tmp_path: Path) -> None:
        file = secret_file(tmp_path / "password", "hunter2-loose", mode=0o644)

        with pytest.raises(ConfigError) as caught:
            load_opcua_password(DEVICE, file, environ={})

        assert "chmod 600" in str(caught.value)
        assert "hunter2-loose" not in str(caught.value)

    def test_symbolic_link_rejected(self, tmp_path: Path) -> None:
        target = secret_file(tmp_path / "real", "linked-secret")
        link = tmp_path / "password"
        link.symlink_to(target)

        with pytest.raises(ConfigError, match="symbolic link"):
            load_opcua_password(DEVICE, link, environ={})


class TestWithOpcUaPasswords:
    def test_relative_file_and_hidden_repr(self, tmp_path: Path) -> None:
        secret_file(tmp_path / "press.password", "Kp4-file-secret")
        config = load_config(
            write_config(
                tmp_path, 'username = "operator"', 'password_file = "press.password"'
            ),
            environ={},
        )
        assert config.specs[DEVICE].password is None  # type: ignore[union-attr]

        specs = with_opcua_passwords(
            config.specs, config.settings, config_dir=tmp_path, environ={}
        )

        spec = specs[DEVICE]
        assert isinstance(spec, OpcUaSpec)
        assert spec.password == "Kp4-file-secret"
        assert "Kp4-file-secret" not in repr(spec)

    def test_no_username_keeps_no_password(self, tmp_path: Path) -> None:
        config = load_config(write_config(tmp_path), environ={})

        specs = with_opcua_passwords(
            config.specs,
            config.settings,
            config_dir=tmp_path,
            environ={ENV_VAR: "unused"},
        )

        assert specs[DEVICE].password is None  # type: ignore[union-attr]


class TestCheckConfigPasswords:
    def test_username_without_password_warns(self, tmp_path: Path) -> None:
        path = write_config(tmp_path, 'username = "operator"')

        report = inspect_config(path, environ={})

        assert report.problems == []
        assert any(f"device '{DEVICE}'" in w and ENV_VAR in w for w in report.warnings)

    def test_environment_password_silences_warning(self, tmp_path: Path) -> None:
        path = write_config(tmp_path, 'username = "operator"')

        report = inspect_config(path, environ={ENV_VAR: "secret"})

        assert report.problems == []
        assert report.warnings == []

    def test_loose_password_file_is_error(self, tmp_path: Path) -> None:
        secret_file(tmp_path / "press.password", "x", mode=0o640)
        path = write_config(
            tmp_path, 'username = "operator"', 'password_file = "press.password"'
        )

        report = inspect_config(path, environ={})

        assert len(report.problems) == 1
        problem = report.problems[0]
        assert problem.key_path.endswith("password_file")
        assert problem.line == 7
        assert "0640" in problem.message
        assert "chmod 600" in problem.message

    def test_password_for_unknown_device_warns(self, tmp_path: Path) -> None:
        path = write_config(tmp_path, 'username = "operator"')
        stray = "CMAGENT_OPCUA_PASSWORD__PRESS_3"

        report = inspect_config(path, environ={ENV_VAR: "a", stray: "b"})

        assert len(report.warnings) == 1
        assert stray in report.warnings[0]
