"""load_settings: source precedence, environment-only sections, secrets."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.errors import ConfigError
from agent.settings import ModbusPointSettings, Settings, load_settings


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def config(tmp_path: Path) -> Path:
    return write(
        tmp_path / "agent.toml",
        '[gateway]\nid = "gw-toml"\n\n[mqtt]\nhost = "127.0.0.1"\nport = 1883\n',
    )


class TestPrecedence:
    def test_toml_beats_defaults(self, config: Path) -> None:
        settings = load_settings(config, environ={})

        assert settings.gateway.id == "gw-toml"
        assert settings.mqtt.port == 1883
        assert settings.mqtt.keepalive == 30.0

    def test_environment_beats_toml(self, config: Path) -> None:
        settings = load_settings(config, environ={"CMAGENT_MQTT__PORT": "1884"})

        assert settings.mqtt.port == 1884
        assert settings.mqtt.host == "127.0.0.1"

    def test_overrides_beat_environment(self, config: Path) -> None:
        settings = load_settings(
            config,
            overrides={"mqtt.port": 1885, "gateway": {"id": "gw-cli"}},
            environ={"CMAGENT_MQTT__PORT": "1884", "CMAGENT_GATEWAY__ID": "gw-env"},
        )

        assert settings.mqtt.port == 1885
        assert settings.gateway.id == "gw-cli"

    def test_environment_names_ignore_case(self, config: Path) -> None:
        settings = load_settings(config, environ={"cmagent_mqtt__port": "1886"})

        assert settings.mqtt.port == 1886

    def test_no_file_uses_defaults_and_environment(self) -> None:
        settings = load_settings(None, environ={"CMAGENT_GATEWAY__ID": "gw-env"})

        assert settings.gateway.id == "gw-env"
        assert settings.config_path is None

    def test_config_path_recorded(self, config: Path) -> None:
        settings = load_settings(config, environ={})

        assert settings.config_path == config
        assert settings.config_dir == config.parent


class TestEnvironmentOnlySection:
    def test_uplink_absent_from_toml_set_from_environment(self, config: Path) -> None:
        environ = {
            "CMAGENT_UPLINK__ENVIRONMENT": "production",
            "CMAGENT_UPLINK__PRODUCTION__BASE_URL": "https://192.0.2.30",
            "CMAGENT_UPLINK__TOKEN": "tok-from-env",
        }

        settings = load_settings(config, environ=environ)

        assert settings.uplink.environment == "production"
        assert settings.uplink.production.base_url == "https://192.0.2.30"
        assert settings.uplink.token is not None
        assert settings.uplink.token.get_secret_value() == "tok-from-env"
        assert settings.uplink.sandbox.base_url == "http://127.0.0.1:8700"

    def test_misspelled_variable_recorded_as_warning(self, config: Path) -> None:
        settings = load_settings(
            config,
            environ={"CMAGENT_MQTT_HOST": "192.0.2.1", "OTHERAPP_X": "1"},
        )

        assert settings.mqtt.host == "127.0.0.1"
        assert settings.settings_warnings == [
            "environment variable CMAGENT_MQTT_HOST matches no setting; did you "
            "mean CMAGENT_MQTT__HOST? ('__' separates nested keys)"
        ]


class TestSecrets:
    def test_secrets_absent_from_repr_str_and_dump(self, config: Path) -> None:
        token, password = "tok-5b1e0f77", "pw-93ac1d44"

        settings = load_settings(
            config,
            environ={
                "CMAGENT_UPLINK__TOKEN": token,
                "CMAGENT_MQTT__PASSWORD": password,
            },
        )

        for text in (repr(settings), str(settings), str(settings.model_dump())):
            assert token not in text
            assert password not in text
        assert settings.mqtt.password is not None
        assert settings.mqtt.password.get_secret_value() == password

    def test_token_in_toml_raises_without_value(self, tmp_path: Path) -> None:
        path = write(tmp_path / "agent.toml", '[uplink]\ntoken = "tok-in-file-1"\n')

        with pytest.raises(ConfigError) as caught:
            load_settings(path, environ={})

        assert "tok-in-file-1" not in str(caught.value)
        assert "tok-in-file-1" not in "\n".join(caught.value.problems)
        assert caught.value.problems[0].startswith(f"{path}:2: uplink.token: ")


class TestConfigError:
    def test_lists_every_problem(self, tmp_path: Path) -> None:
        path = write(
            tmp_path / "agent.toml",
            '[mqtt]\nport = 0\nqos_alarms = 3\n[gateway]\nstate_dri = "/tmp"\n',
        )

        with pytest.raises(ConfigError) as caught:
            load_settings(path, environ={})

        assert caught.value.problems == [
            f"{path}:2: mqtt.port: expected a value >= 1, found 0",
            f"{path}:3: mqtt.qos_alarms: expected 0, 1 or 2, found 3",
            f"{path}:5: gateway.state_dri: unknown key 'state_dri'; did you "
            "mean 'state_dir'?",
        ]


class TestModbusPoint:
    def test_float32_with_one_register_rejected(self) -> None:
        with pytest.raises(
            ValueError, match="float32 needs 2 registers, found count = 1"
        ):
            ModbusPointSettings(address=0, type="float32", count=1)

    @pytest.mark.parametrize(
        ("number", "table", "offset"),
        [
            (40001, "holding", 0),
            (40244, "holding", 243),
            (49999, "holding", 9998),
            (30001, "input", 0),
            (31000, "input", 999),
        ],
    )
    def test_modicon_number_converted(
        self, number: int, table: str, offset: int
    ) -> None:
        point = ModbusPointSettings(address=number)

        assert (point.table, point.address) == (table, offset)

    def test_explicit_other_table_keeps_offset(self) -> None:
        point = ModbusPointSettings(address=40244, table="input")

        assert (point.table, point.address) == ("input", 40244)

    def test_type_sets_register_count(self) -> None:
        assert ModbusPointSettings(address=0, type="float64").register_count == 4
        assert ModbusPointSettings(address=0, type="int32").register_count == 2
        assert (
            ModbusPointSettings(address=0, type="string", count=8).register_count == 8
        )


class TestSettingsClass:
    def test_reads_process_environment_without_file(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("CMAGENT_LOGGING__LEVEL", "DEBUG")

        assert Settings().logging.level == "DEBUG"
