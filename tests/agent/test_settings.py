"""load_settings: source precedence, environment-only sections, secrets."""

from __future__ import annotations

import logging
import math
import types
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import pytest
from pydantic import BaseModel, ValidationError

import agent.profiles  # noqa: F401  (its models subclass StrictModel)
from agent.errors import ConfigError
from agent.settings import (
    ModbusPointSettings,
    ModbusTcpDeviceSettings,
    ModbusWaveformSettings,
    Settings,
    StrictModel,
    load_settings,
)
from agent.units import parse_duration_s, parse_positive_duration_s


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

    def test_environment_sets_integer_choice(self, config: Path) -> None:
        settings = load_settings(
            config,
            environ={"CMAGENT_MQTT__QOS_ALARMS": "2", "CMAGENT_MQTT__QOS_HEALTH": "1"},
        )
        assert settings.mqtt.qos_alarms == 2
        assert settings.mqtt.qos_health == 1

    def test_environment_rejects_integer_outside_choices(self, config: Path) -> None:
        with pytest.raises(ConfigError) as caught:
            load_settings(config, environ={"CMAGENT_MQTT__QOS_ALARMS": "3"})
        assert "mqtt.qos_alarms" in str(caught.value.problems)

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

    def test_warning_logged_with_text(
        self, config: Path, caplog: pytest.LogCaptureFixture
    ) -> None:
        with caplog.at_level(logging.WARNING, logger="agent.settings"):
            load_settings(config, environ={"CMAGENT_MQTT_HOST": "192.0.2.1"})

        (record,) = caplog.records
        assert record.getMessage() == "settings.warning"
        assert record.detail.startswith(  # type: ignore[attr-defined]
            "environment variable CMAGENT_MQTT_HOST matches no setting"
        )


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


def waveform(**addresses: object) -> ModbusWaveformSettings:
    """Build a waveform from ``addresses`` on top of valid small offsets."""
    fields: dict[str, object] = {
        "block_address": 1000,
        "max_samples": 4096,
        "sample_count_address": 6,
        "sample_rate_address": 4,
        "sequence_address": 2,
    }
    fields.update(addresses)
    return ModbusWaveformSettings(**fields)  # type: ignore[arg-type]


class TestModbusWaveformAddresses:
    # Each expected offset is the number minus 30001 (input) or 40001
    # (holding), the Modicon convention.
    @pytest.mark.parametrize(
        ("key", "number", "offset"),
        [
            ("block_address", 31001, 1000),
            ("sample_count_address", 30107, 106),
            ("sample_rate_address", 30105, 104),
            ("sequence_address", 30103, 102),
            ("ready_address", 30101, 100),
            ("rpm_address", 30109, 108),
        ],
    )
    def test_input_number_converted(self, key: str, number: int, offset: int) -> None:
        converted = waveform(**{key: number})

        assert converted.table == "input"
        assert getattr(converted, key) == offset

    @pytest.mark.parametrize(
        ("key", "number", "offset"),
        [
            ("trigger_address", 40101, 100),
            ("capture_length_address", 40103, 102),
            ("page_address", 40105, 104),
        ],
    )
    def test_holding_write_number_converted(
        self, key: str, number: int, offset: int
    ) -> None:
        extra = {"page_samples": 1024} if key == "page_address" else {}

        converted = waveform(**{key: number}, **extra)

        assert getattr(converted, key) == offset
        assert converted.table == "input"

    def test_holding_numbers_choose_holding_table(self) -> None:
        converted = waveform(
            block_address=41001, sample_count_address=40007, sequence_address=2
        )

        assert converted.table == "holding"
        assert converted.block_address == 1000
        assert converted.sample_count_address == 6
        assert converted.sequence_address == 2

    def test_explicit_other_table_keeps_offset(self) -> None:
        settings = waveform(table="holding", block_address=31001, ready_address=40101)

        assert settings.table == "holding"
        assert settings.block_address == 31001
        assert settings.ready_address == 100

    def test_input_number_for_write_kept(self) -> None:
        # The driver writes holding registers only, so an input-register
        # number stays a holding offset, as a point's does in another table.
        settings = waveform(trigger_address=30101)

        assert settings.trigger_address == 30101

    def test_numbers_of_both_tables_rejected(self) -> None:
        with pytest.raises(ValidationError) as caught:
            waveform(block_address=31001, sample_count_address=40107)

        message = str(caught.value)
        assert "table: expected the Modicon register numbers of one table" in message
        assert "block_address = 31001 (input)" in message
        assert "sample_count_address = 40107 (holding)" in message

    @pytest.mark.parametrize(
        "key",
        [
            "sample_count_address",
            "sample_rate_address",
            "sequence_address",
            "ready_address",
            "trigger_address",
            "rpm_address",
            "capture_length_address",
            "page_address",
        ],
    )
    def test_address_past_65535_rejected(self, key: str) -> None:
        # 300107 is a six-digit Modicon number, which is not converted.
        extra = {"page_samples": 1024} if key == "page_address" else {}

        with pytest.raises(ValidationError) as caught:
            waveform(**{key: 300107}, **extra)

        (error,) = caught.value.errors()
        assert error["loc"] == (key,)
        assert error["type"] == "less_than_equal"

    def test_small_offsets_unchanged(self) -> None:
        settings = waveform(ready_address=100, trigger_address=100)

        assert settings.table == "input"
        assert settings.block_address == 1000
        assert settings.ready_address == 100
        assert settings.trigger_address == 100


class TestSettingsClass:
    def test_reads_process_environment_without_file(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("CMAGENT_LOGGING__LEVEL", "DEBUG")

        assert Settings().logging.level == "DEBUG"


DEVICE_LINES = [
    "[assets.pump1]",
    "[devices.pump1]",
    'driver = "modbus_tcp"',
    'host = "127.0.0.1"',
    'asset = "pump1"',
]


def load_problems(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_settings(path, environ={})
    return caught.value.problems


class TestBooleanNumbers:
    @pytest.mark.parametrize(
        ("line", "key_path", "message"),
        [
            (
                "unit_id = true",
                "devices.pump1.unit_id",
                "expected an integer, found a boolean (true)",
            ),
            (
                "port = false",
                "devices.pump1.port",
                "expected an integer, found a boolean (false)",
            ),
            (
                "timeout = true",
                "devices.pump1.timeout",
                "expected a duration such as '30s' or '5m', found a boolean (true)",
            ),
            (
                "points.speed = { address = 0, scale = true }",
                "devices.pump1.points.speed.scale",
                "expected a number, found a boolean (true)",
            ),
        ],
    )
    def test_boolean_in_device_rejected(
        self, tmp_path: Path, line: str, key_path: str, message: str
    ) -> None:
        lines = [*DEVICE_LINES, line]
        path = write(tmp_path / "agent.toml", "\n".join(lines) + "\n")
        line_number = lines.index(line) + 1

        assert load_problems(path) == [f"{path}:{line_number}: {key_path}: {message}"]

    def test_boolean_size_rejected(self, tmp_path: Path) -> None:
        path = write(tmp_path / "agent.toml", "[store]\nmax_bytes = true\n")

        assert load_problems(path) == [
            f"{path}:2: store.max_bytes: expected a size such as '200MB', found "
            "a boolean (true)"
        ]

    def test_boolean_float_rejected(self, tmp_path: Path) -> None:
        path = write(tmp_path / "agent.toml", "[uplink]\nmax_requests_per_s = true\n")

        assert load_problems(path) == [
            f"{path}:2: uplink.max_requests_per_s: expected a number, found "
            "a boolean (true)"
        ]

    def test_integers_fill_float_fields(self, tmp_path: Path) -> None:
        lines = [
            *DEVICE_LINES,
            "timeout = 2",
            "points.speed = { address = 0, scale = 2, range = [0, 100] }",
            "[assets.pump1.bearing_geometry]",
            "balls = 9",
            "ball_diameter = 8",
            "pitch_diameter = 39",
        ]
        path = write(tmp_path / "agent.toml", "\n".join(lines) + "\n")

        settings = load_settings(path, environ={})

        device = settings.devices["pump1"]
        assert isinstance(device, ModbusTcpDeviceSettings)
        assert device.timeout == 2.0
        point = device.points["speed"]
        assert isinstance(point, ModbusPointSettings)
        assert point.scale == 2.0
        assert point.range == (0.0, 100.0)
        geometry = settings.assets["pump1"].bearing_geometry
        assert geometry is not None
        assert geometry.ball_diameter == 8.0

    def test_environment_strings_set_numbers(self, tmp_path: Path) -> None:
        path = write(tmp_path / "agent.toml", "\n".join(DEVICE_LINES) + "\n")
        environ = {
            "CMAGENT_DEVICES__PUMP1__UNIT_ID": "3",
            "CMAGENT_DEVICES__PUMP1__PORT": "1502",
            "CMAGENT_DEVICES__PUMP1__TIMEOUT": "250ms",
            "CMAGENT_UPLINK__MAX_REQUESTS_PER_S": "2.5",
            "CMAGENT_STORE__MAX_BYTES": "1GB",
        }

        settings = load_settings(path, environ=environ)

        device = settings.devices["pump1"]
        assert isinstance(device, ModbusTcpDeviceSettings)
        assert device.unit_id == 3
        assert device.port == 1502
        assert device.timeout == 0.25
        assert settings.uplink.max_requests_per_s == 2.5
        assert settings.store.max_bytes == 1_000_000_000

    def test_environment_string_replaces_toml_boolean(self, tmp_path: Path) -> None:
        lines = [*DEVICE_LINES, "unit_id = true"]
        path = write(tmp_path / "agent.toml", "\n".join(lines) + "\n")

        settings = load_settings(path, environ={"CMAGENT_DEVICES__PUMP1__UNIT_ID": "7"})

        device = settings.devices["pump1"]
        assert isinstance(device, ModbusTcpDeviceSettings)
        assert device.unit_id == 7


def members(annotation: Any) -> list[Any]:
    """Flatten unions and Annotated into plain types, None removed."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return members(typing.get_args(annotation)[0])
    if origin is typing.Union or origin is types.UnionType:
        return [m for arg in typing.get_args(annotation) for m in members(arg)]
    return [] if annotation is type(None) else [annotation]


def is_number(annotation: Any) -> bool:
    for member in members(annotation):
        if member in (int, float):
            return True
        if typing.get_origin(member) is Literal and any(
            type(value) is int for value in typing.get_args(member)
        ):
            return True
    return False


def settings_fields() -> Iterator[tuple[type[BaseModel], str, Any, list[Any]]]:
    """Yield ``(model, field name, annotation, tuple element types)`` for
    every field of every subclass of StrictModel.

    The element types are those of the field's first tuple member, empty
    when it has none.
    """
    pending: list[type[BaseModel]] = [StrictModel]
    while pending:
        model = pending.pop()
        pending += model.__subclasses__()
        for name, field in model.model_fields.items():
            tuples = [
                typing.get_args(m)
                for m in members(field.annotation)
                if typing.get_origin(m) is tuple
            ]
            elements = list(tuples[0]) if tuples else []
            yield model, name, field.annotation, elements


def boolean_inputs() -> list[Any]:
    """Return a ``(model, field, value, loc)`` case per numeric settings field.

    Every subclass of StrictModel is searched. A tuple of numbers gets an
    array of booleans, whose error is expected at index 0.
    """
    cases: list[Any] = []
    for model, name, annotation, elements in settings_fields():
        case_id = f"{model.__name__}.{name}"
        if is_number(annotation):
            cases.append(pytest.param(model, name, True, (name,), id=case_id))
        elif elements and all(is_number(arg) for arg in elements):
            value = [True] * len(elements)
            cases.append(pytest.param(model, name, value, (name, 0), id=case_id))
    return cases


class TestEveryNumericField:
    def test_walk_finds_known_fields(self) -> None:
        ids = {case.id for case in boolean_inputs()}

        for known in (
            "ModbusTcpDeviceSettings.unit_id",
            "ModbusRtuDeviceSettings.stopbits",
            "ModbusPointSettings.range",
            "OilLimitsSettings.iso4406_warning",
            "MqttSettings.qos_alarms",
            "StoreSettings.max_bytes",
            "HealthSettings.min_duration",
        ):
            assert known in ids

    @pytest.mark.parametrize(("model", "name", "value", "loc"), boolean_inputs())
    def test_rejects_boolean(
        self, model: type[BaseModel], name: str, value: Any, loc: tuple[Any, ...]
    ) -> None:
        with pytest.raises(ValidationError) as caught:
            model.model_validate({name: value})

        at_field = [error for error in caught.value.errors() if error["loc"] == loc]
        assert len(at_field) == 1
        assert at_field[0]["input"] is True


def float_inputs() -> list[Any]:
    """Return a ``(model, field, value, loc)`` case per float settings field.

    Durations are floats too. A tuple of floats gets an array of nan, whose
    error is expected at index 0. The bounds of ``range`` may be infinite,
    so it is left out.
    """
    cases: list[Any] = []
    for model, name, annotation, elements in settings_fields():
        if name == "range":
            continue
        case_id = f"{model.__name__}.{name}"
        if float in members(annotation):
            cases.append(pytest.param(model, name, math.nan, (name,), id=case_id))
        elif elements and all(float in members(arg) for arg in elements):
            value = [math.nan] * len(elements)
            cases.append(pytest.param(model, name, value, (name, 0), id=case_id))
    return cases


class TestEveryFloatField:
    def test_walk_finds_known_fields(self) -> None:
        ids = {case.id for case in float_inputs()}

        for known in (
            "ModbusPointSettings.scale",
            "ThresholdSettings.alarm",
            "HealthSettings.alarm_factor",
            "AssetSettings.rpm",
            "AssetSettings.envelope_band_hz",
            "UplinkSettings.max_requests_per_s",
        ):
            assert known in ids

    @pytest.mark.parametrize(("model", "name", "value", "loc"), float_inputs())
    def test_rejects_nan(
        self, model: type[BaseModel], name: str, value: Any, loc: tuple[Any, ...]
    ) -> None:
        with pytest.raises(ValidationError) as caught:
            model.model_validate({name: value})

        at_field = [error for error in caught.value.errors() if error["loc"] == loc]
        assert len(at_field) == 1
        # Numbers fail pydantic's finite_number check and durations fail
        # the duration parser, whose message names the same rule.
        assert "finite" in at_field[0]["msg"]


class TestDurationParsing:
    @pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
    def test_rejects_non_finite_number(self, value: float) -> None:
        with pytest.raises(ValueError, match="expected a finite duration"):
            parse_duration_s(value)

    def test_accepts_zero(self) -> None:
        assert parse_duration_s(0) == 0.0
        assert parse_duration_s("0s") == 0.0

    @pytest.mark.parametrize("value", [0, 0.0, "0s", "0ms", "0.0m"])
    def test_positive_rejects_zero(self, value: object) -> None:
        with pytest.raises(ValueError) as caught:
            parse_positive_duration_s(value)

        assert str(caught.value) == (
            f"expected a duration greater than 0, found {value!r}"
        )

    def test_positive_accepts_milliseconds(self) -> None:
        assert parse_positive_duration_s("250ms") == 0.25


OPCUA_LINES = [
    "[assets.fan]",
    "[devices.ua]",
    'driver = "opcua"',
    'endpoint = "opc.tcp://127.0.0.1:4840"',
    'asset = "fan"',
]
RTU_LINES = [
    "[assets.pump1]",
    "[devices.rtu]",
    'driver = "modbus_rtu"',
    'serial_port = "/dev/ttyS0"',
    'asset = "pump1"',
]
WAVEFORM_LINES = [
    *DEVICE_LINES,
    "[devices.pump1.waveforms.accel]",
    "block_address = 100",
    "max_samples = 1024",
    "sample_count_address = 0",
    "sample_rate_address = 2",
    "sequence_address = 4",
]
ZERO_DURATIONS = [
    (DEVICE_LINES, "poll_interval", "devices.pump1.poll_interval"),
    (DEVICE_LINES, "waveform_interval", "devices.pump1.waveform_interval"),
    (DEVICE_LINES, "timeout", "devices.pump1.timeout"),
    (DEVICE_LINES, "connect_timeout", "devices.pump1.connect_timeout"),
    (RTU_LINES, "timeout", "devices.rtu.timeout"),
    (OPCUA_LINES, "connect_timeout", "devices.ua.connect_timeout"),
    (OPCUA_LINES, "request_timeout", "devices.ua.request_timeout"),
    (OPCUA_LINES, "publishing_interval", "devices.ua.publishing_interval"),
    (WAVEFORM_LINES, "ready_timeout", "devices.pump1.waveforms.accel.ready_timeout"),
    (["[mqtt]"], "keepalive", "mqtt.keepalive"),
    (["[mqtt]"], "reconnect_max", "mqtt.reconnect_max"),
    (["[uplink]"], "request_timeout", "uplink.request_timeout"),
    (["[uplink]"], "asset_refresh_interval", "uplink.asset_refresh_interval"),
    (["[uplink]"], "retry_max", "uplink.retry_max"),
]


class TestDurationSettings:
    @pytest.mark.parametrize(
        ("table", "key", "key_path"),
        ZERO_DURATIONS,
        ids=[case[2] for case in ZERO_DURATIONS],
    )
    def test_zero_rejected(
        self, tmp_path: Path, table: list[str], key: str, key_path: str
    ) -> None:
        lines = [*table, f'{key} = "0s"']
        path = write(tmp_path / "agent.toml", "\n".join(lines) + "\n")
        line_number = lines.index(f'{key} = "0s"') + 1

        assert load_problems(path) == [
            f"{path}:{line_number}: {key_path}: expected a duration greater "
            "than 0, found '0s'"
        ]

    @pytest.mark.parametrize(
        ("table", "key", "key_path"),
        ZERO_DURATIONS,
        ids=[case[2] for case in ZERO_DURATIONS],
    )
    @pytest.mark.parametrize("value", ["-5", "-0.25"])
    def test_negative_rejected_like_zero(
        self, tmp_path: Path, table: list[str], key: str, key_path: str, value: str
    ) -> None:
        lines = [*table, f"{key} = {value}"]
        path = write(tmp_path / "agent.toml", "\n".join(lines) + "\n")

        assert load_problems(path) == [
            f"{path}:{len(lines)}: {key_path}: expected a duration greater "
            f"than 0, found {value}"
        ]

    @pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
    def test_non_finite_rejected(self, tmp_path: Path, value: str) -> None:
        lines = [*DEVICE_LINES, f"poll_interval = {value}"]
        path = write(tmp_path / "agent.toml", "\n".join(lines) + "\n")
        line_number = len(lines)

        assert load_problems(path) == [
            f"{path}:{line_number}: devices.pump1.poll_interval: expected a "
            f"finite duration, found {float(value)!r}"
        ]

    def test_zero_min_duration_accepted(self, tmp_path: Path) -> None:
        path = write(tmp_path / "agent.toml", "[health]\nmin_duration = 0\n")

        assert load_settings(path, environ={}).health.min_duration == 0.0

    def test_keepalive_below_one_second_rejected(self, tmp_path: Path) -> None:
        path = write(tmp_path / "agent.toml", '[mqtt]\nkeepalive = "500ms"\n')

        assert load_problems(path) == [
            f"{path}:2: mqtt.keepalive: expected a value >= 1.0, found 0.5"
        ]


class TestFiniteFloats:
    @pytest.mark.parametrize(
        ("line", "key_path", "found"),
        [
            (
                "points.speed = { address = 0, scale = nan }",
                "devices.pump1.points.speed.scale",
                "nan",
            ),
            (
                "points.speed = { address = 0, offset = -inf }",
                "devices.pump1.points.speed.offset",
                "-inf",
            ),
        ],
    )
    def test_point_scaling_rejected(
        self, tmp_path: Path, line: str, key_path: str, found: str
    ) -> None:
        lines = [*DEVICE_LINES, line]
        path = write(tmp_path / "agent.toml", "\n".join(lines) + "\n")
        line_number = lines.index(line) + 1

        assert load_problems(path) == [
            f"{path}:{line_number}: {key_path}: expected a finite number, found {found}"
        ]

    def test_infinite_range_bound_accepted(self, tmp_path: Path) -> None:
        lines = [*DEVICE_LINES, "points.speed = { address = 0, range = [0, inf] }"]
        path = write(tmp_path / "agent.toml", "\n".join(lines) + "\n")

        device = load_settings(path, environ={}).devices["pump1"]

        assert isinstance(device, ModbusTcpDeviceSettings)
        assert device.points["speed"].range == (0.0, math.inf)

    def test_nan_range_bound_rejected(self, tmp_path: Path) -> None:
        line = "points.speed = { address = 0, range = [nan, 10] }"
        lines = [*DEVICE_LINES, line]
        path = write(tmp_path / "agent.toml", "\n".join(lines) + "\n")

        assert load_problems(path) == [
            f"{path}:{len(lines)}: devices.pump1.points.speed.range: expected "
            "[low, high] with low < high, found [nan, 10.0]"
        ]

    def test_infinite_request_rate_rejected(self, tmp_path: Path) -> None:
        path = write(tmp_path / "agent.toml", "[uplink]\nmax_requests_per_s = inf\n")

        assert load_problems(path) == [
            f"{path}:2: uplink.max_requests_per_s: expected a finite number, found inf"
        ]
