"""Secret loading and ``cmagent token set`` on real files."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from agent.errors import ConfigError
from agent.settings import UplinkEndpointSettings, UplinkSettings
from agent.uplink.token import (
    MQTT_CREDENTIAL,
    MQTT_ENV_VAR,
    TokenProvider,
    load_secret,
    write_secret_file,
)

TOKEN = "token-4f2a9c1e7b3d"
REPO = Path(__file__).resolve().parents[2]


def settings_with(path: Path | None) -> UplinkSettings:
    return UplinkSettings(
        sandbox=UplinkEndpointSettings(base_url="http://127.0.0.1:1", token_file=path)
    )


@pytest.fixture
def token_file(tmp_path: Path) -> Path:
    path = tmp_path / "uplink-token"
    write_secret_file(path, TOKEN)
    return path


class TestTokenProvider:
    def test_reads_token_file(self, token_file: Path) -> None:
        provider = TokenProvider(settings_with(token_file), environ={})
        assert provider.load().get_secret_value() == TOKEN
        assert provider.source == f"file {token_file}"

    def test_environment_beats_file(self, token_file: Path) -> None:
        environ = {"CMAGENT_UPLINK__TOKEN": "from-env"}
        provider = TokenProvider(settings_with(token_file), environ=environ)
        assert provider.load().get_secret_value() == "from-env"
        assert provider.source == "environment CMAGENT_UPLINK__TOKEN"

    def test_credential_beats_environment(self, tmp_path: Path) -> None:
        credentials = tmp_path / "creds"
        credentials.mkdir()
        (credentials / "uplink-token").write_text("from-systemd\n")
        environ = {
            "CREDENTIALS_DIRECTORY": str(credentials),
            "CMAGENT_UPLINK__TOKEN": "from-env",
        }
        provider = TokenProvider(settings_with(None), environ=environ)
        assert provider.load().get_secret_value() == "from-systemd"
        assert provider.source == "credential uplink-token"

    def test_uses_default_file(self, token_file: Path) -> None:
        provider = TokenProvider(
            settings_with(None), environ={}, default_file=token_file
        )
        assert provider.load().get_secret_value() == TOKEN

    def test_production_uses_its_own_file(self, tmp_path: Path) -> None:
        production = tmp_path / "production-token"
        write_secret_file(production, "production-value")
        settings = UplinkSettings(
            environment="production",
            production=UplinkEndpointSettings(
                base_url="https://127.0.0.1:1", token_file=production
            ),
        )
        provider = TokenProvider(settings, environ={})
        assert provider.load().get_secret_value() == "production-value"

    def test_missing_token_says_how_to_fix(self) -> None:
        provider = TokenProvider(settings_with(None), environ={})
        with pytest.raises(ConfigError, match="cmagent token set"):
            provider.load()

    def test_rejects_group_readable_file(self, token_file: Path) -> None:
        token_file.chmod(0o640)
        provider = TokenProvider(settings_with(token_file), environ={})
        with pytest.raises(ConfigError, match=r"mode 0640.*chmod 600") as caught:
            provider.load()
        assert TOKEN not in str(caught.value)

    def test_rejects_symlink(self, token_file: Path, tmp_path: Path) -> None:
        link = tmp_path / "link-token"
        link.symlink_to(token_file)
        provider = TokenProvider(settings_with(link), environ={})
        with pytest.raises(ConfigError, match="symbolic link"):
            provider.load()

    def test_rejects_directory(self, tmp_path: Path) -> None:
        folder = tmp_path / "folder"
        folder.mkdir(mode=0o700)
        provider = TokenProvider(settings_with(folder), environ={})
        with pytest.raises(ConfigError, match=r"not a regular file|cannot read"):
            provider.load()

    def test_rejects_empty_token(self, tmp_path: Path) -> None:
        path = tmp_path / "empty"
        path.write_text("\n")
        path.chmod(0o600)
        provider = TokenProvider(settings_with(path), environ={})
        with pytest.raises(ConfigError, match="empty"):
            provider.load()

    def test_rejects_control_character(self, tmp_path: Path) -> None:
        path = tmp_path / "pasted"
        path.write_text("first-half\r\nsecond-half\n")
        path.chmod(0o600)
        provider = TokenProvider(settings_with(path), environ={})
        with pytest.raises(ConfigError, match="control character") as caught:
            provider.load()
        assert "half" not in str(caught.value)

    def test_repr_hides_token(self, token_file: Path) -> None:
        provider = TokenProvider(settings_with(token_file), environ={})
        secret = provider.load()
        assert TOKEN not in repr(provider)
        assert TOKEN not in repr(secret)
        assert TOKEN not in str(secret)


class TestLoadSecret:
    def test_mqtt_password_from_environment(self) -> None:
        loaded = load_secret(
            MQTT_CREDENTIAL, MQTT_ENV_VAR, None, environ={MQTT_ENV_VAR: "pw"}
        )
        assert loaded is not None
        assert loaded.value.get_secret_value() == "pw"

    def test_nothing_configured_returns_none(self) -> None:
        assert load_secret(MQTT_CREDENTIAL, MQTT_ENV_VAR, None, environ={}) is None


class TestWriteSecretFile:
    def test_writes_mode_0600(self, tmp_path: Path) -> None:
        path = tmp_path / "secret"
        write_secret_file(path, "value\n")
        assert path.stat().st_mode & 0o777 == 0o600
        assert path.read_text() == "value\n"

    def test_replaces_existing_file(self, token_file: Path) -> None:
        write_secret_file(token_file, "second")
        assert token_file.read_text() == "second\n"
        assert list(token_file.parent.glob(".*.tmp")) == []

    def test_rejects_empty_value(self, tmp_path: Path) -> None:
        with pytest.raises(ConfigError, match="empty"):
            write_secret_file(tmp_path / "secret", "  \n")

    def test_rejects_value_spanning_lines(self, tmp_path: Path) -> None:
        path = tmp_path / "secret"
        with pytest.raises(ConfigError, match="one line") as caught:
            write_secret_file(path, "first-half\nsecond-half\n")
        assert "half" not in str(caught.value)
        assert not path.exists()


class TestTokenSetCommand:
    def run_cli(self, *args: str, stdin: str) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        env.pop("CMAGENT_UPLINK__TOKEN", None)
        return subprocess.run(
            [sys.executable, "-m", "agent", "token", "set", *args],
            input=stdin,
            capture_output=True,
            text=True,
            env=env,
            check=False,
            timeout=60,
        )

    def test_stores_piped_token(self, tmp_path: Path) -> None:
        path = tmp_path / "uplink-token"
        result = self.run_cli("--file", str(path), stdin=TOKEN + "\n")
        assert result.returncode == 0
        assert path.read_text() == TOKEN + "\n"
        assert path.stat().st_mode & 0o777 == 0o600
        assert "systemd-creds encrypt --name=uplink-token" in result.stdout
        assert TOKEN not in result.stdout + result.stderr

    def test_uses_state_dir_from_config(self, tmp_path: Path) -> None:
        config = tmp_path / "cmagent.toml"
        config.write_text(f'[gateway]\nstate_dir = "{tmp_path}"\n')
        result = self.run_cli("--config", str(config), stdin=TOKEN)
        assert result.returncode == 0, result.stderr
        assert (tmp_path / "uplink-token").read_text() == TOKEN + "\n"

    def test_empty_input_fails(self, tmp_path: Path) -> None:
        result = self.run_cli("--file", str(tmp_path / "t"), stdin="")
        assert result.returncode == 1
        assert "empty" in result.stderr
        assert not (tmp_path / "t").exists()
