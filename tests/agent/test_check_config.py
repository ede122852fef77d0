"""check-config: every problem with its file, line and key path."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from agent.config_check import environment_warnings, inspect_config
from agent.settings import ModbusPointSettings, ModbusTcpDeviceSettings

ROOT = Path(__file__).resolve().parents[2]


def write(path: Path, lines: list[str]) -> Path:
    """Write ``lines`` so that ``lines[i]`` is line ``i + 1`` of the file."""
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def problem_lines(path: Path, environ: dict[str, str] | None = None) -> list[str]:
    report = inspect_config(path, environ=environ or {})
    return [str(problem) for problem in report.problems]


MODBUS_DEVICE = [
    "[devices.pump1]",
    'driver = "modbus_tcp"',
    'host = "127.0.0.1"',
    'asset = "pump1"',
]


class TestReportedLines:
    def test_typo_and_wrong_type_in_one_report(self, tmp_path: Path) -> None:
        path = write(
            tmp_path / "agent.toml",
            [
                "[gateway]",  # 1
                'id = "gw1"',  # 2
                "",  # 3
                "[assets.pump1]",  # 4
                'name = "Pump 1"',  # 5
                "[mqtt]",  # 6
                'hots = "127.0.0.1"',  # 7
                "",  # 8
                "[devices.pump1]",  # 9
                'driver = "modbus_tcp"',  # 10
                'host = "127.0.0.1"',  # 11
                'port = "five-o-two"',  # 12
                'asset = "pump1"',  # 13
            ],
        )

        lines = problem_lines(path)

        assert lines == [
            f"{path}:7: mqtt.hots: unknown key 'hots'; did you mean 'host'?",
            f"{path}:12: devices.pump1.port: expected an integer, found 'five-o-two'",
        ]

    def test_syntax_error_in_second_file_gives_line_and_column(
        self, tmp_path: Path
    ) -> None:
        good = write(tmp_path / "good.toml", ["[gateway]", 'id = "gw1"'])
        bad = write(
            tmp_path / "bad.toml",
            ["[gateway]", 'id = "gw1"', "", "[mqtt]", "port = = 1883"],
        )

        assert problem_lines(good) == []
        lines = problem_lines(bad)

        assert len(lines) == 1
        assert lines[0].startswith(f"{bad}:5:8: syntax error: ")

    def test_misspelled_key_in_waveform_table(self, tmp_path: Path) -> None:
        path = write(
            tmp_path / "agent.toml",
            [
                "[assets.fan]",  # 1
                "[devices.ua]",  # 2
                'driver = "opcua"',  # 3
                'endpoint = "opc.tcp://127.0.0.1:4840"',  # 4
                'asset = "fan"',  # 5
                "[devices.ua.waveforms.accel]",  # 6
                'samples = { node_id = "nsu=urn:x;s=Wave" }',  # 7
                'sample_rate = { node_id = "nsu=urn:x;s=Fs" }',  # 8
                'sampel_rate = { node_id = "nsu=urn:x;s=Fs" }',  # 9
            ],
        )

        assert problem_lines(path) == [
            f"{path}:9: devices.ua.waveforms.accel.sampel_rate: unknown key "
            "'sampel_rate'; did you mean 'sample_rate'?",
        ]

    def test_misspelled_table_name(self, tmp_path: Path) -> None:
        path = write(
            tmp_path / "agent.toml",
            ["[gateway]", 'id = "gw1"', "", "[devcies.pump1]", 'host = "x"'],
        )

        assert problem_lines(path) == [
            f"{path}:4: devcies: unknown key 'devcies'; did you mean 'devices'?",
        ]

    def test_unknown_driver_lists_valid_ones(self, tmp_path: Path) -> None:
        path = write(
            tmp_path / "agent.toml",
            [
                "[assets.pump1]",
                "[devices.pump1]",
                'driver = "modbus"',
                'asset = "pump1"',
            ],
        )

        assert problem_lines(path) == [
            f"{path}:3: devices.pump1.driver: unknown driver 'modbus'; expected "
            "one of 'modbus_tcp', 'modbus_rtu', 'opcua'",
        ]


class TestPointRules:
    def test_float32_with_one_register_rejected(self, tmp_path: Path) -> None:
        path = write(
            tmp_path / "agent.toml",
            [
                "[assets.pump1]",
                *MODBUS_DEVICE,  # 2-5
                "[devices.pump1.points.speed]",  # 6
                "address = 8",  # 7
                'type = "float32"',  # 8
                "count = 1",  # 9
            ],
        )

        assert problem_lines(path) == [
            f"{path}:9: devices.pump1.points.speed.count: float32 needs 2 "
            "registers, found count = 1",
        ]

    def test_modicon_address_converted_with_note(self, tmp_path: Path) -> None:
        path = write(
            tmp_path / "agent.toml",
            [
                "[assets.pump1]",
                *MODBUS_DEVICE,
                "[devices.pump1.points.speed]",  # 6
                "address = 40244",  # 7
                'type = "uint16"',
            ],
        )

        report = inspect_config(path, environ={})

        assert report.problems == []
        assert [str(note) for note in report.notes] == [
            f"{path}:7: devices.pump1.points.speed.address: note: 40244 is a "
            "Modicon holding-register number; using holding offset 243",
        ]
        assert report.settings is not None
        point = report.settings.devices["pump1"].points["speed"]
        assert (point.table, point.address) == ("holding", 243)

    def test_reversed_range_rejected(self, tmp_path: Path) -> None:
        path = write(
            tmp_path / "agent.toml",
            [
                "[assets.pump1]",
                *MODBUS_DEVICE,
                "[devices.pump1.points.speed]",
                "address = 0",
                "range = [500, 0]",  # 8
            ],
        )

        lines = problem_lines(path)

        assert len(lines) == 1
        assert lines[0].startswith(
            f"{path}:8: devices.pump1.points.speed.range: expected [low, high] "
            "with low < high, found "
        )

    def test_string_needs_count_and_bit_needs_bool(self, tmp_path: Path) -> None:
        path = write(
            tmp_path / "agent.toml",
            [
                "[assets.pump1]",
                *MODBUS_DEVICE,
                'points.serial = { address = 20, type = "string" }',  # 6
                'points.flag = { address = 30, type = "uint16", bit = 3 }',  # 7
                "points.top = { address = 65535, type = 'uint32' }",  # 8
            ],
        )

        lines = problem_lines(path)

        assert lines == [
            f"{path}:6: devices.pump1.points.serial.count: a string needs "
            "count = <registers> (2 characters each), found no count",
            f"{path}:7: devices.pump1.points.flag.bit: bit selects one bit of a "
            "register and needs type = 'bool' in a holding or input table, "
            "found type = 'uint16' in table = 'holding'",
            f"{path}:8: devices.pump1.points.top.address: expected the point to "
            "end at offset 65535 or below, found address 65535 + 2 registers "
            "ending at 65536",
        ]

    def test_opcua_node_rules(self, tmp_path: Path) -> None:
        path = write(
            tmp_path / "agent.toml",
            [
                "[assets.fan]",  # 1
                "[devices.ua]",  # 2
                'driver = "opcua"',  # 3
                'endpoint = "opc.tcp://127.0.0.1:4840"',  # 4
                'asset = "fan"',  # 5
                'security_policy = "Basic256Sha256"',  # 6
                'security_mode = "Sign"',  # 7
                'certificate = "client.pem"',  # 8
                "[devices.ua.points.speed]",  # 9
                'node_id = "ns=2;s=Speed"',  # 10
                "[devices.ua.points.both]",  # 11
                'node_id = "nsu=urn:x;s=A"',  # 12
                'browse_path = ["{urn:x}A"]',  # 13
            ],
        )

        lines = problem_lines(path)

        assert lines == [
            f"{path}:2: devices.ua.private_key: Basic256Sha256 needs "
            "private_key = <file path>, found none",
            f"{path}:10: devices.ua.points.speed.node_id: namespace indexes can "
            "change when the server restarts, found 'ns=2;s=Speed'; write "
            "nsu=<namespace URI>;... or use browse_path",
            f"{path}:12: devices.ua.points.both.node_id: expected exactly one "
            "of node_id or browse_path, found both",
        ]


class TestWaveformAddresses:
    def test_waveform_modicon_addresses_noted(self, tmp_path: Path) -> None:
        path = write(
            tmp_path / "agent.toml",
            [
                "[assets.pump1]",
                *MODBUS_DEVICE,
                "[devices.pump1.waveforms.accel]",  # 6
                "block_address = 31001",  # 7
                "max_samples = 4096",  # 8
                "sample_count_address = 30107",  # 9
                "sample_rate_address = 30105",  # 10
                "sequence_address = 102",  # 11
                "trigger_address = 40101",  # 12
            ],
        )

        report = inspect_config(path, environ={})

        assert report.problems == []
        assert [str(note) for note in report.notes] == [
            f"{path}:7: devices.pump1.waveforms.accel.block_address: note: 31001 "
            "is a Modicon input-register number; using input offset 1000",
            f"{path}:9: devices.pump1.waveforms.accel.sample_count_address: note: "
            "30107 is a Modicon input-register number; using input offset 106",
            f"{path}:10: devices.pump1.waveforms.accel.sample_rate_address: note: "
            "30105 is a Modicon input-register number; using input offset 104",
            f"{path}:12: devices.pump1.waveforms.accel.trigger_address: note: "
            "40101 is a Modicon holding-register number; using holding offset 100",
        ]
        assert report.settings is not None
        accel = report.settings.devices["pump1"].waveforms["accel"]
        assert accel.table == "input"
        assert accel.block_address == 1000
        assert accel.sample_count_address == 106
        assert accel.sample_rate_address == 104
        assert accel.sequence_address == 102
        assert accel.trigger_address == 100

    def test_profile_waveform_modicon_noted(self, tmp_path: Path) -> None:
        devices = tmp_path / "devices"
        devices.mkdir()
        profile_lines = [
            "[profile]",  # 1
            'name = "my-sensor"',  # 2
            'protocol = "modbus"',  # 3
            "[waveforms.accel]",  # 4
            "block_address = 41001",  # 5
            "max_samples = 4096",  # 6
            "sample_count_address = 40107",  # 7
            "sample_rate_address = 104",  # 8
            "sequence_address = 102",  # 9
        ]
        profile = write(devices / "my-sensor.toml", profile_lines)
        path = write(
            tmp_path / "agent.toml",
            ["[assets.pump1]", *MODBUS_DEVICE, 'profile = "my-sensor"'],
        )

        report = inspect_config(path, environ={})

        assert report.problems == []
        assert [str(note) for note in report.notes] == [
            f"{profile}:5: waveforms.accel.block_address: note: 41001 is a "
            "Modicon holding-register number; using holding offset 1000",
            f"{profile}:7: waveforms.accel.sample_count_address: note: 40107 is "
            "a Modicon holding-register number; using holding offset 106",
        ]

    def test_waveform_numbers_of_both_tables_rejected(self, tmp_path: Path) -> None:
        path = write(
            tmp_path / "agent.toml",
            [
                "[assets.pump1]",
                *MODBUS_DEVICE,
                "[devices.pump1.waveforms.accel]",  # 6
                "block_address = 31001",  # 7
                "max_samples = 4096",  # 8
                "sample_count_address = 40107",  # 9
                "sample_rate_address = 104",  # 10
                "sequence_address = 102",  # 11
            ],
        )

        report = inspect_config(path, environ={})

        assert [str(problem) for problem in report.problems] == [
            f"{path}:6: devices.pump1.waveforms.accel.table: expected the Modicon "
            "register numbers of one table, found block_address = 31001 (input), "
            "sample_count_address = 40107 (holding); set table = 'input' or "
            "'holding', or give zero-based offsets",
        ]
        assert report.notes == []


class TestBooleanNumbers:
    def test_booleans_reported_at_their_lines(self, tmp_path: Path) -> None:
        lines = [
            "[assets.pump1]",
            "iso_group = true",
            *MODBUS_DEVICE,
            "unit_id = true",
            "port = false",
            "timeout = true",
            "[devices.pump1.points.speed]",
            "address = 8",
            "scale = false",
            "range = [0, true]",
            "[store]",
            "max_bytes = true",
            "[mqtt]",
            "qos_alarms = true",
        ]
        path = write(tmp_path / "agent.toml", lines)

        def at(line: str) -> str:
            return f"{path}:{lines.index(line) + 1}"

        assert problem_lines(path) == [
            f"{at('iso_group = true')}: assets.pump1.iso_group: expected 1 or 2, "
            "found a boolean (true)",
            f"{at('unit_id = true')}: devices.pump1.unit_id: expected an integer, "
            "found a boolean (true)",
            f"{at('port = false')}: devices.pump1.port: expected an integer, "
            "found a boolean (false)",
            f"{at('timeout = true')}: devices.pump1.timeout: expected a duration "
            "such as '30s' or '5m', found a boolean (true)",
            f"{at('scale = false')}: devices.pump1.points.speed.scale: expected a "
            "number, found a boolean (false)",
            f"{at('range = [0, true]')}: devices.pump1.points.speed.range[1]: "
            "expected a number, found a boolean (true)",
            f"{at('max_bytes = true')}: store.max_bytes: expected a size such as "
            "'200MB', found a boolean (true)",
            f"{at('qos_alarms = true')}: mqtt.qos_alarms: expected 0, 1 or 2, "
            "found a boolean (true)",
        ]

    def test_boolean_in_profile_names_profile_file(self, tmp_path: Path) -> None:
        devices = tmp_path / "devices"
        devices.mkdir()
        profile_lines = [
            "[profile]",
            'name = "my-sensor"',
            'protocol = "modbus"',
            "[points.temperature]",
            "address = true",
            'type = "float32"',
        ]
        profile = write(devices / "my-sensor.toml", profile_lines)
        path = write(
            tmp_path / "agent.toml",
            ["[assets.pump1]", *MODBUS_DEVICE, 'profile = "my-sensor"'],
        )
        line = profile_lines.index("address = true") + 1

        assert problem_lines(path) == [
            f"{profile}:{line}: points.temperature.address: expected an integer, "
            "found a boolean (true)",
        ]

    def test_integers_in_float_fields_pass(self, tmp_path: Path) -> None:
        path = write(
            tmp_path / "agent.toml",
            [
                "[assets.pump1]",
                "rpm = 1480",
                "envelope_band_hz = [500, 5000]",
                *MODBUS_DEVICE,
                "timeout = 2",
                "points.speed = { address = 8, scale = 2, offset = -40 }",
                "[health]",
                "hysteresis = 0",
            ],
        )

        report = inspect_config(path, environ={})

        assert report.problems == []
        assert report.settings is not None
        assert report.settings.assets["pump1"].rpm == 1480.0
        assert report.settings.assets["pump1"].envelope_band_hz == (500.0, 5000.0)
        device = report.settings.devices["pump1"]
        assert isinstance(device, ModbusTcpDeviceSettings)
        assert device.timeout == 2.0
        point = device.points["speed"]
        assert isinstance(point, ModbusPointSettings)
        assert (point.scale, point.offset) == (2.0, -40.0)
        assert report.settings.health.hysteresis == 0.0

    def test_environment_strings_pass(self, tmp_path: Path) -> None:
        path = write(tmp_path / "agent.toml", ["[assets.pump1]", *MODBUS_DEVICE])
        environ = {
            "CMAGENT_DEVICES__PUMP1__UNIT_ID": "3",
            "CMAGENT_DEVICES__PUMP1__TIMEOUT": "1.5",
            "CMAGENT_HEALTH__HYSTERESIS": "0.2",
            "CMAGENT_STORE__MAX_BYTES": "512kB",
        }

        report = inspect_config(path, environ=environ)

        assert report.problems == []
        assert report.settings is not None
        device = report.settings.devices["pump1"]
        assert isinstance(device, ModbusTcpDeviceSettings)
        assert device.unit_id == 3
        assert device.timeout == 1.5
        assert report.settings.health.hysteresis == 0.2
        assert report.settings.store.max_bytes == 512_000


class TestCrossChecks:
    def test_references_between_tables(self, tmp_path: Path) -> None:
        path = write(
            tmp_path / "agent.toml",
            [
                "[assets.pump1]",  # 1
                'rpm_point = "sped"',  # 2
                'bearing = "9999"',  # 3
                "[devices.pump1]",  # 4
                'driver = "modbus_tcp"',  # 5
                'host = "127.0.0.1"',  # 6
                'asset = "pump2"',  # 7
                "points.speed = { address = 0 }",  # 8
            ],
        )

        lines = problem_lines(path)

        assert lines == [
            f"{path}:2: assets.pump1.rpm_point: expected a point of asset "
            "'pump1' (it has none), found 'sped'",
            f"{path}:3: assets.pump1.bearing: unknown bearing '9999'; expected "
            "one of '6203', '6205' or a [bearing_geometry] table",
            f"{path}:7: devices.pump1.asset: unknown asset 'pump2'; expected one "
            "of the [assets] tables ('pump1'); did you mean 'pump1'?",
        ]

    def test_profile_errors_name_profile_file(self, tmp_path: Path) -> None:
        devices = tmp_path / "devices"
        devices.mkdir()
        profile = write(
            devices / "my-sensor.toml",
            [
                "[profile]",  # 1
                'name = "my-sensor"',  # 2
                'protocol = "modbus"',  # 3
                "",  # 4
                "[points.temperature]",  # 5
                "address = 6",  # 6
                'type = "float23"',  # 7
            ],
        )
        path = write(
            tmp_path / "agent.toml",
            ["[assets.pump1]", *MODBUS_DEVICE, 'profile = "my-sensor"'],
        )

        lines = problem_lines(path)

        assert lines == [
            f"{profile}:7: points.temperature.type: expected 'int16', 'uint16', "
            "'int32', 'uint32', 'int64', 'uint64', 'float32', 'float64', "
            "'bool' or 'string', found 'float23'",
        ]

    def test_missing_profile_and_wrong_protocol(self, tmp_path: Path) -> None:
        path = write(
            tmp_path / "agent.toml",
            [
                "[assets.pump1]",  # 1
                *MODBUS_DEVICE,  # 2-5
                'profile = "no-such-sensor"',  # 6
                "[devices.ua]",  # 7
                'driver = "opcua"',  # 8
                'endpoint = "opc.tcp://127.0.0.1:4840"',  # 9
                'asset = "pump1"',  # 10
                'profile = "oil-modbus"',  # 11
            ],
        )

        lines = problem_lines(path)

        assert len(lines) == 2
        assert lines[0].startswith(
            f"{path}:6: devices.pump1.profile: profile 'no-such-sensor' not "
            f"found; searched {tmp_path / 'devices'}, "
        )
        assert lines[1].startswith(
            f"{path}:11: devices.ua.profile: driver 'opcua' needs a profile "
            "with protocol 'opcua', found 'modbus' in "
        )


class TestProfileNotFound:
    def test_misspelled_profile_gets_suggestion(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        from agent.profiles import BUNDLED_PROFILE_DIR

        write(
            tmp_path / "agent.toml",
            ["[assets.pump1]", *MODBUS_DEVICE, 'profile = "oil-modbsu"'],
        )
        # A relative path, as a technician types it, still shows the
        # absolute directories searched.
        monkeypatch.chdir(tmp_path)

        lines = problem_lines(Path("agent.toml"))

        assert lines == [
            "agent.toml:6: devices.pump1.profile: profile 'oil-modbsu' not "
            f"found; searched {tmp_path / 'devices'}, {BUNDLED_PROFILE_DIR} "
            "for oil-modbsu.toml; did you mean 'oil-modbus'?"
        ]

    def test_own_profile_directory_suggested(self, tmp_path: Path) -> None:
        sensors = tmp_path / "sensors"
        sensors.mkdir()
        write(sensors / "acme-vib9.toml", ["[profile]"])
        path = write(
            tmp_path / "agent.toml",
            [
                "[gateway]",
                'profile_dirs = ["sensors"]',
                "[assets.pump1]",
                *MODBUS_DEVICE,
                'profile = "acme-vib8"',
            ],
        )

        lines = problem_lines(path)

        assert len(lines) == 1
        assert lines[0].startswith(
            f"{path}:8: devices.pump1.profile: profile 'acme-vib8' not found; "
            f"searched {sensors}, {tmp_path / 'devices'}, "
        )
        assert lines[0].endswith("; did you mean 'acme-vib9'?")


class TestStateDir:
    def test_file_as_state_dir_rejected(self, tmp_path: Path) -> None:
        path = write(
            tmp_path / "agent.toml",
            ["[gateway]", 'id = "gw1"', f'state_dir = "{tmp_path / "agent.toml"}"'],
        )

        assert problem_lines(path) == [
            f"{path}:3: gateway.state_dir: expected the agent's state "
            "directory, found a file; set gateway.state_dir to a directory"
        ]

    def test_state_dir_below_file_rejected(self, tmp_path: Path) -> None:
        state_dir = tmp_path / "agent.toml" / "state"
        path = write(
            tmp_path / "agent.toml", ["[gateway]", f'state_dir = "{state_dir}"']
        )

        assert problem_lines(path) == [
            f"{path}:2: gateway.state_dir: expected the agent's state "
            f"directory, found a file at {path}, so {state_dir} cannot be "
            "created; set gateway.state_dir to a directory"
        ]

    def test_missing_state_dir_accepted_and_not_created(self, tmp_path: Path) -> None:
        state_dir = tmp_path / "not-yet" / "state"
        path = write(
            tmp_path / "agent.toml", ["[gateway]", f'state_dir = "{state_dir}"']
        )

        assert problem_lines(path) == []
        assert not (tmp_path / "not-yet").exists()

    def test_state_dir_from_environment_named(self, tmp_path: Path) -> None:
        path = write(tmp_path / "agent.toml", ["[gateway]", 'id = "gw1"'])
        environ = {"CMAGENT_GATEWAY__STATE_DIR": str(path)}

        assert problem_lines(path, environ) == [
            "environment CMAGENT_GATEWAY__STATE_DIR: gateway.state_dir: expected "
            "the agent's state directory, found a file; set gateway.state_dir "
            "to a directory"
        ]


class TestDuplicateKeys:
    @pytest.mark.parametrize(
        ("lines", "expected"),
        [
            (
                ["[gateway]", 'id = "a"', 'id = "b"'],
                "3: gateway.id: syntax error: key 'gateway.id' is set twice, "
                "first at line 2; keep one of them",
            ),
            (
                ["[mqtt]", "port = 1883", "", "[mqtt]", 'host = "h"'],
                "4: mqtt: syntax error: table [mqtt] is declared twice, first "
                "at line 1; merge the two tables",
            ),
            (
                ["[assets.pump1]", "[assets.pump1.thresholds]", "rms = 1", "rms = 2"],
                "4: assets.pump1.thresholds.rms: syntax error: key "
                "'assets.pump1.thresholds.rms' is set twice, first at line 3; "
                "keep one of them",
            ),
            (
                ["[gateway]", "profile_dirs = []", "profile_dirs = [", '  "a",', "]"],
                "3: gateway.profile_dirs: syntax error: key "
                "'gateway.profile_dirs' is set twice, first at line 2; keep one "
                "of them",
            ),
            (
                ['id = "a"', '"id" = "b"'],
                "2: id: syntax error: key 'id' is set twice, first at line 1; "
                "keep one of them",
            ),
        ],
        ids=["key", "table", "nested", "multi-line value", "quoted at end"],
    )
    def test_names_key_and_first_line(
        self, tmp_path: Path, lines: list[str], expected: str
    ) -> None:
        path = tmp_path / "agent.toml"
        # The last case ends without a newline, where tomllib gives no line.
        path.write_text("\n".join(lines), encoding="utf-8")

        assert problem_lines(path) == [f"{path}:{expected}"]

    def test_other_syntax_error_unchanged(self, tmp_path: Path) -> None:
        path = write(tmp_path / "agent.toml", ["t = {a = 1, a = 2}"])

        assert problem_lines(path) == [
            f"{path}:1:18: syntax error: Duplicate inline table key 'a'"
        ]


class TestSecrets:
    def test_token_in_toml_rejected_without_value(self, tmp_path: Path) -> None:
        secret = "tok-6f1d2c9a-visible-nowhere"
        path = write(
            tmp_path / "agent.toml",
            [
                "[uplink]",  # 1
                'environment = "sandbox"',  # 2
                f'token = "{secret}"',  # 3
                "[mqtt]",  # 4
                f'password = "{secret}"',  # 5
            ],
        )

        report = inspect_config(path, environ={})
        text = "\n".join(str(p) for p in report.problems)

        assert secret not in text
        assert [(p.line, p.key_path) for p in report.problems] == [
            (3, "uplink.token"),
            (5, "mqtt.password"),
        ]
        assert "cmagent token set" in report.problems[0].message
        assert "$CREDENTIALS_DIRECTORY/uplink-token" in report.problems[0].message
        assert "CMAGENT_UPLINK__TOKEN" in report.problems[0].message
        assert "CMAGENT_MQTT__PASSWORD" in report.problems[1].message

    def test_nested_secret_key_rejected(self, tmp_path: Path) -> None:
        path = write(
            tmp_path / "agent.toml",
            ["[uplink.production]", 'base_url = "https://192.0.2.30"', 'Token = "x1"'],
        )

        assert [p.key_path for p in inspect_config(path, environ={}).problems] == [
            "uplink.production.Token"
        ]


class TestContradictions:
    def test_alarm_factor_below_warning_factor(self, tmp_path: Path) -> None:
        lines = ["[health]", "warning_factor = 6.0", "alarm_factor = 3.0"]
        path = write(tmp_path / "agent.toml", lines)
        line = lines.index("alarm_factor = 3.0") + 1

        assert problem_lines(path) == [
            f"{path}:{line}: health.alarm_factor: expected a value >= "
            "warning_factor = 6.0, found 3.0"
        ]

    def test_equal_factors_accepted(self, tmp_path: Path) -> None:
        lines = ["[health]", "warning_factor = 6.0", "alarm_factor = 6.0"]

        assert problem_lines(write(tmp_path / "agent.toml", lines)) == []

    def test_threshold_warning_above_alarm(self, tmp_path: Path) -> None:
        lines = [
            "[assets.pump1.thresholds.velocity_rms_mm_s]",
            "warning = 7.1",
            "alarm = 4.5",
        ]
        path = write(tmp_path / "agent.toml", lines)
        line = lines.index("alarm = 4.5") + 1

        assert problem_lines(path) == [
            f"{path}:{line}: assets.pump1.thresholds.velocity_rms_mm_s.alarm: "
            "expected a value >= warning = 7.1, found 4.5"
        ]

    def test_threshold_nan_rejected(self, tmp_path: Path) -> None:
        lines = ["[assets.pump1.thresholds.rms]", "warning = nan", "alarm = 2.0"]
        path = write(tmp_path / "agent.toml", lines)
        line = lines.index("warning = nan") + 1

        assert problem_lines(path) == [
            f"{path}:{line}: assets.pump1.thresholds.rms.warning: expected a "
            "finite number, found nan"
        ]

    def test_empty_threshold_rejected(self, tmp_path: Path) -> None:
        lines = ["[assets.pump1]", "thresholds.rms = {}"]
        path = write(tmp_path / "agent.toml", lines)
        line = lines.index("thresholds.rms = {}") + 1

        assert problem_lines(path) == [
            f"{path}:{line}: assets.pump1.thresholds.rms.warning: expected "
            "warning, alarm or both, found neither"
        ]

    def test_ball_larger_than_pitch_diameter(self, tmp_path: Path) -> None:
        lines = [
            "[assets.pump1.bearing_geometry]",
            "balls = 9",
            "ball_diameter = 40",
            "pitch_diameter = 39",
        ]
        path = write(tmp_path / "agent.toml", lines)
        line = lines.index("ball_diameter = 40") + 1

        assert problem_lines(path) == [
            f"{path}:{line}: assets.pump1.bearing_geometry.ball_diameter: "
            "expected a ball diameter smaller than pitch_diameter = 39.0, "
            "found 40.0"
        ]

    def test_rpm_and_rpm_point_together(self, tmp_path: Path) -> None:
        lines = [
            "[assets.pump1]",
            "rpm = 1480",
            'rpm_point = "speed"',
            *MODBUS_DEVICE,
            "points.speed = { address = 0 }",
        ]
        path = write(tmp_path / "agent.toml", lines)
        line = lines.index('rpm_point = "speed"') + 1

        assert problem_lines(path) == [
            f"{path}:{line}: assets.pump1.rpm_point: expected rpm or rpm_point, "
            "found both (rpm = 1480.0); remove rpm to use the measured speed "
            "or rpm_point to use the fixed one"
        ]

    def test_reversed_envelope_band(self, tmp_path: Path) -> None:
        lines = ["[assets.pump1]", "envelope_band_hz = [5000, 500]"]
        path = write(tmp_path / "agent.toml", lines)
        line = lines.index("envelope_band_hz = [5000, 500]") + 1

        assert problem_lines(path) == [
            f"{path}:{line}: assets.pump1.envelope_band_hz: expected [low, high] "
            "in Hz with 0 <= low < high, found [5000.0, 500.0]"
        ]

    def test_oil_alarms_below_warnings(self, tmp_path: Path) -> None:
        lines = [
            "[assets.pump1.oil]",
            "iso4406_alarm = [17, 18, 15]",
            "water_saturation_alarm_pct = 50",
        ]
        path = write(tmp_path / "agent.toml", lines)
        codes = lines.index("iso4406_alarm = [17, 18, 15]") + 1
        water = lines.index("water_saturation_alarm_pct = 50") + 1

        assert problem_lines(path) == [
            f"{path}:{codes}: assets.pump1.oil.iso4406_alarm: expected each code "
            ">= the one in iso4406_warning = [18, 16, 13], found [17, 18, 15]",
            f"{path}:{water}: assets.pump1.oil.water_saturation_alarm_pct: "
            "expected a value >= water_saturation_warning_pct = 60.0, found 50.0",
        ]


class TestThresholdNames:
    def test_misspelled_point_gets_suggestion(self, tmp_path: Path) -> None:
        lines = [
            "[assets.pump1.thresholds.velocty_rms_x]",
            "alarm = 7.1",
            *MODBUS_DEVICE,
            "points.velocity_rms_x = { address = 0 }",
        ]
        path = write(tmp_path / "agent.toml", lines)
        line = lines.index("[assets.pump1.thresholds.velocty_rms_x]") + 1

        assert problem_lines(path) == [
            f"{path}:{line}: assets.pump1.thresholds.velocty_rms_x: unknown "
            "indicator 'velocty_rms_x'; expected one of 'bearing_fault', "
            "'crest_factor', 'iso4406_14um', 'iso4406_4um', 'iso4406_6um', "
            "'kurtosis', 'rms', 'velocity_rms_mm_s', 'water_saturation' or a "
            "point of asset 'pump1' ('velocity_rms_x'); did you mean "
            "'velocity_rms_x'?"
        ]

    def test_misspelled_indicator_gets_suggestion(self, tmp_path: Path) -> None:
        lines = ["[assets.fan]", "thresholds.kurtsis = { alarm = 6.0 }"]
        path = write(tmp_path / "agent.toml", lines)
        line = lines.index("thresholds.kurtsis = { alarm = 6.0 }") + 1

        problems = problem_lines(path)

        assert len(problems) == 1
        assert problems[0].startswith(
            f"{path}:{line}: assets.fan.thresholds.kurtsis: unknown indicator "
        )
        assert "point of asset 'fan' (it has none)" in problems[0]
        assert problems[0].endswith("; did you mean 'kurtosis'?")

    def test_indicators_and_points_accepted(self, tmp_path: Path) -> None:
        lines = [
            "[assets.pump1]",
            "thresholds.velocity_rms_mm_s = { alarm = 7.1 }",
            "thresholds.water_saturation = { warning = 50 }",
            "thresholds.bearing_temp = { alarm = 90 }",
            *MODBUS_DEVICE,
            "points.bearing_temp = { address = 0 }",
        ]

        assert problem_lines(write(tmp_path / "agent.toml", lines)) == []

    def test_point_of_other_asset_rejected(self, tmp_path: Path) -> None:
        lines = [
            "[assets.fan]",
            "thresholds.bearing_temp = { alarm = 90 }",
            "[assets.pump1]",
            *MODBUS_DEVICE,
            "points.bearing_temp = { address = 0 }",
        ]
        path = write(tmp_path / "agent.toml", lines)

        assert [p.split(": ")[1] for p in problem_lines(path)] == [
            "assets.fan.thresholds.bearing_temp"
        ]


class TestDevicePasswords:
    def test_opcua_password_names_device_credential(self, tmp_path: Path) -> None:
        secret = "ua-pw-3c5e7a9b"
        lines = [
            "[assets.fan]",
            '[devices."press-2.ua"]',
            'driver = "opcua"',
            'endpoint = "opc.tcp://127.0.0.1:4840"',
            'asset = "fan"',
            'username = "cmagent"',
            f'password = "{secret}"',
        ]
        path = write(tmp_path / "agent.toml", lines)
        line = lines.index(f'password = "{secret}"') + 1

        assert problem_lines(path) == [
            f"{path}:{line}: devices.press-2.ua.password: secrets are not "
            "accepted in configuration files; store the password of OPC UA "
            "device 'press-2.ua' as the systemd credential "
            "opcua-press-2.ua-password "
            "($CREDENTIALS_DIRECTORY/opcua-press-2.ua-password), in "
            "CMAGENT_OPCUA_PASSWORD__PRESS_2_UA or in the device's "
            "password_file with mode 0600"
        ]

    def test_modbus_password_has_no_setting(self, tmp_path: Path) -> None:
        lines = ["[assets.pump1]", *MODBUS_DEVICE, 'password = "x1"']
        path = write(tmp_path / "agent.toml", lines)

        assert problem_lines(path) == [
            f"{path}:{len(lines)}: devices.pump1.password: secrets are not "
            "accepted in configuration files; a modbus_tcp device has no "
            "password setting, so remove the key"
        ]


class TestEnvironment:
    def test_single_underscore_variable_warned(self) -> None:
        environ = {
            "CMAGENT_MQTT_HOST": "127.0.0.1",
            "CMAGENT_MQTT__PORT": "1884",
            "PATH": "/usr/bin",
            "OTHERAPP_X": "1",
        }

        warnings = environment_warnings(environ)

        assert warnings == [
            "environment variable CMAGENT_MQTT_HOST matches no setting; did you "
            "mean CMAGENT_MQTT__HOST? ('__' separates nested keys)"
        ]

    def test_device_key_respelled_to_leaf(self) -> None:
        warnings = environment_warnings({"CMAGENT_DEVICES_PUMP1_PORT": "503"})

        assert len(warnings) == 1
        assert "did you mean CMAGENT_DEVICES__PUMP1__PORT?" in warnings[0]

    def test_invalid_environment_value_names_variable(self, tmp_path: Path) -> None:
        path = write(tmp_path / "agent.toml", ["[mqtt]", 'host = "127.0.0.1"'])

        lines = problem_lines(path, {"CMAGENT_MQTT__PORT": "eighteen"})

        assert lines == [
            "environment CMAGENT_MQTT__PORT: mqtt.port: expected an integer, "
            "found 'eighteen'"
        ]

    def test_environment_value_beats_file_line(self, tmp_path: Path) -> None:
        path = write(tmp_path / "agent.toml", ["[mqtt]", "port = 1883"])

        lines = problem_lines(path, {"CMAGENT_MQTT__PORT": "eighteen"})

        assert lines == [
            "environment CMAGENT_MQTT__PORT: mqtt.port: expected an integer, "
            "found 'eighteen'"
        ]


def run_check_config(path: Path, **extra_env: str) -> subprocess.CompletedProcess[str]:
    environ = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("CMAGENT_")
    }
    environ.update(extra_env)
    return subprocess.run(
        [sys.executable, "-m", "agent", "check-config", str(path)],
        cwd=ROOT,
        env=environ,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


class TestCommand:
    def test_example_configuration_is_valid(self) -> None:
        result = run_check_config(ROOT / "config" / "agent.example.toml")

        # The shipped profiles' own counts, plus one inline point.
        profiles = [
            tomllib.loads((ROOT / "config" / "devices" / f"{name}.toml").read_text())
            for name in ("vib-triax-modbus", "oil-modbus", "vib-opcua")
        ]
        points = sum(len(p.get("points", {})) for p in profiles) + 1
        waveforms = sum(len(p.get("waveforms", {})) for p in profiles)

        assert result.returncode == 0, result.stdout + result.stderr
        assert result.stdout.splitlines() == [
            f"config OK: 3 devices, 2 assets, {points} points, {waveforms} waveforms"
        ]

    def test_demo_configuration_is_valid(self, tmp_path: Path) -> None:
        from agent.demo_config import demo_config_text

        text = demo_config_text(
            state_dir=tmp_path / "state",
            modbus_port=15020,
            opcua_endpoint="opc.tcp://127.0.0.1:48400",
            mqtt_port=18830,
            api_base_url="http://127.0.0.1:18700",
            token_file=tmp_path / "token",
        )
        path = tmp_path / "demo.toml"
        path.write_text(text, encoding="utf-8")

        assert problem_lines(path) == []

    def test_invalid_file_exits_1_without_secret(self, tmp_path: Path) -> None:
        secret = "pw-0d9e8f7a6b"
        path = write(tmp_path / "agent.toml", ["[mqtt]", f'password = "{secret}"'])

        result = run_check_config(
            path, CMAGENT_MQTT_HOST="127.0.0.1", CMAGENT_UPLINK__TOKEN=secret
        )

        assert result.returncode == 1
        assert secret not in result.stdout + result.stderr
        assert result.stdout.splitlines() == [
            "warning: environment variable CMAGENT_MQTT_HOST matches no setting; "
            "did you mean CMAGENT_MQTT__HOST? ('__' separates nested keys)",
            f"{path}:2: mqtt.password: secrets are not accepted in configuration "
            "files; store the MQTT password as the systemd credential "
            "mqtt-password ($CREDENTIALS_DIRECTORY/mqtt-password), in "
            "CMAGENT_MQTT__PASSWORD or in a password_file with mode 0600",
            "1 problem found",
        ]

    def test_empty_file_valid_with_warning(self, tmp_path: Path) -> None:
        path = write(tmp_path / "agent.toml", ["# nothing configured yet"])

        result = run_check_config(path)

        assert result.returncode == 0
        assert result.stdout.splitlines() == [
            f"warning: {path}: no devices configured, so the agent would poll "
            "nothing; add a [devices.<name>] table (see "
            "config/agent.example.toml)",
            "config OK: 0 devices, 0 assets, 0 points, 0 waveforms",
        ]

    @pytest.mark.parametrize("name", ["missing.toml"])
    def test_missing_file_exits_1(self, tmp_path: Path, name: str) -> None:
        result = run_check_config(tmp_path / name)

        assert result.returncode == 1
        assert result.stdout.startswith(f"{tmp_path / name}: cannot read file")
