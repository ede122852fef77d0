"""Device profiles: search order, merging and conversion to driver specs."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.errors import ConfigError
from agent.profiles import (
    BUNDLED_PROFILE_DIR,
    build_device_specs,
    profile_search_dirs,
    read_profile,
)
from agent.settings import load_settings
from drivers import spec

MODBUS_PROFILE = """\
[profile]
name = "test-vib"
vendor = "Test"
model = "TV-1"
protocol = "modbus"

[points.velocity]
table = "input"
address = 0
type = "float32"
unit = "mm/s"
range = [0, 500]

[points.temperature]
table = "input"
address = 2
type = "int16"
scale = 0.1
unit = "degC"

[waveforms.accel]
block_address = 1000
max_samples = 4096
sample_count_address = 10
sample_rate_address = 12
sequence_address = 14
"""

MODICON_PROFILE = """\
[profile]
name = "test-vib"
protocol = "modbus"

[waveforms.accel]
block_address = 31001
max_samples = 4096
sample_count_address = 30011
sample_rate_address = 30013
sequence_address = 14
ready_address = 30101
trigger_address = 40101
"""
"""The waveform of MODBUS_PROFILE with Modicon numbers for some addresses."""

OPCUA_PROFILE = """\
[profile]
name = "test-ua"
protocol = "opcua"

[points.velocity]
browse_path = ["{urn:test}Velocity"]
unit = "mm/s"

[waveforms.accel]
samples = { browse_path = ["{urn:test}Wave"] }
sample_rate = { node_id = "nsu=urn:test;s=Fs" }
"""

CONFIG = """\
[assets.pump1]
[assets.motor1]

[devices.vib]
driver = "modbus_tcp"
host = "127.0.0.1"
port = 5020
profile = "test-vib"
asset = "pump1"

[devices.vib.points.temperature]
table = "holding"
address = 40
type = "int16"
asset = "motor1"

[devices.ua]
driver = "opcua"
endpoint = "opc.tcp://127.0.0.1:4840"
profile = "test-ua"
asset = "motor1"
browse_root = ["{urn:test}Sensors", "{urn:test}S1"]
points.extra = { browse_path = ["{urn:test}Absolute"] }
"""


@pytest.fixture
def config(tmp_path: Path) -> Path:
    devices = tmp_path / "devices"
    devices.mkdir()
    (devices / "test-vib.toml").write_text(MODBUS_PROFILE, encoding="utf-8")
    (devices / "test-ua.toml").write_text(OPCUA_PROFILE, encoding="utf-8")
    path = tmp_path / "agent.toml"
    path.write_text(CONFIG, encoding="utf-8")
    return path


class TestBuildDeviceSpecs:
    def test_profile_points_merged_inline_wins(self, config: Path) -> None:
        specs = build_device_specs(load_settings(config, environ={}))
        vib = specs["vib"]

        assert isinstance(vib, spec.ModbusTcpSpec)
        assert (vib.host, vib.port) == ("127.0.0.1", 5020)
        points = {point.name: point for point in vib.points}
        assert sorted(points) == ["temperature", "velocity"]
        assert points["temperature"].table is spec.RegisterTable.HOLDING
        assert points["temperature"].address == 40
        assert points["temperature"].scale == 1.0

    def test_point_asset_falls_back_to_device(self, config: Path) -> None:
        vib = build_device_specs(load_settings(config, environ={}))["vib"]
        assets = {point.name: point.asset for point in vib.points}

        assert assets == {"velocity": "pump1", "temperature": "motor1"}
        assert [w.asset for w in vib.waveforms] == ["pump1"]

    def test_range_becomes_valid_range(self, config: Path) -> None:
        vib = build_device_specs(load_settings(config, environ={}))["vib"]
        velocity = next(p for p in vib.points if p.name == "velocity")

        assert velocity.valid_range == (0.0, 500.0)
        assert velocity.data_type is spec.DataType.FLOAT32
        assert velocity.count == 2

    def test_waveform_defaults_converted(self, config: Path) -> None:
        vib = build_device_specs(load_settings(config, environ={}))["vib"]
        (accel,) = vib.waveforms

        assert accel.block_address == 1000
        assert accel.table is spec.RegisterTable.INPUT
        assert accel.sample_type is spec.DataType.FLOAT32
        assert accel.ready_timeout_s == 5.0

    def test_waveform_modicon_numbers_converted(self, config: Path) -> None:
        profile = config.parent / "devices" / "test-vib.toml"
        profile.write_text(MODICON_PROFILE, encoding="utf-8")

        vib = build_device_specs(load_settings(config, environ={}))["vib"]
        (accel,) = vib.waveforms

        assert accel.table is spec.RegisterTable.INPUT
        assert accel.block_address == 1000
        assert accel.sample_count_address == 10
        assert accel.sample_rate_address == 12
        assert accel.sequence_address == 14
        assert accel.ready_address == 100
        assert accel.trigger_address == 100

    def test_browse_root_prefixes_profile_paths_only(self, config: Path) -> None:
        ua = build_device_specs(load_settings(config, environ={}))["ua"]

        assert isinstance(ua, spec.OpcUaSpec)
        nodes = {point.name: point.node for point in ua.points}
        assert nodes["velocity"].browse_path == (
            "{urn:test}Sensors",
            "{urn:test}S1",
            "{urn:test}Velocity",
        )
        assert nodes["extra"].browse_path == ("{urn:test}Absolute",)
        (accel,) = ua.waveforms
        assert accel.samples.browse_path == (
            "{urn:test}Sensors",
            "{urn:test}S1",
            "{urn:test}Wave",
        )
        assert accel.sample_rate.node_id == "nsu=urn:test;s=Fs"

    def test_disabled_device_left_out(self, config: Path) -> None:
        settings = load_settings(
            config, environ={"CMAGENT_DEVICES__UA__ENABLED": "false"}
        )

        assert sorted(build_device_specs(settings)) == ["vib"]

    def test_missing_profile_raises_config_error(self, config: Path) -> None:
        settings = load_settings(config, environ={})
        (config.parent / "devices" / "test-ua.toml").unlink()

        with pytest.raises(ConfigError) as caught:
            build_device_specs(settings)

        assert caught.value.problems[0].startswith(
            "devices.ua.profile: profile 'test-ua' not found; searched "
        )


class TestProfileSearch:
    def test_order_profile_dirs_then_devices_then_bundled(self, tmp_path: Path) -> None:
        dirs = profile_search_dirs(tmp_path, [Path("site"), Path("/opt/profiles")])

        assert dirs == [
            tmp_path / "site",
            Path("/opt/profiles"),
            tmp_path / "devices",
            BUNDLED_PROFILE_DIR,
        ]

    def test_relative_directories_made_absolute(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        (tmp_path / "etc").mkdir()
        monkeypatch.chdir(tmp_path / "etc")

        dirs = profile_search_dirs(Path("."), [Path("../site")])

        assert dirs == [
            tmp_path / "site",
            tmp_path / "etc" / "devices",
            BUNDLED_PROFILE_DIR,
        ]

    def test_missing_profile_message_suggests_name(
        self, config: Path, tmp_path: Path
    ) -> None:
        settings = load_settings(config, environ={})
        # The profiles moved after the configuration was checked.
        other = tmp_path / "other"
        (other / "devices").mkdir(parents=True)
        (other / "devices" / "test-vib2.toml").write_text(
            MODBUS_PROFILE, encoding="utf-8"
        )

        with pytest.raises(ConfigError) as caught:
            build_device_specs(settings, other)

        assert caught.value.problems[0] == (
            "devices.vib.profile: profile 'test-vib' not found; searched "
            f"{other / 'devices'}, {BUNDLED_PROFILE_DIR} for test-vib.toml; "
            "did you mean 'test-vib2'?"
        )

    def test_first_directory_wins(self, config: Path) -> None:
        site = config.parent / "site"
        site.mkdir()
        (site / "test-vib.toml").write_text(
            MODBUS_PROFILE.replace("[points.temperature]", "[points.pressure]"),
            encoding="utf-8",
        )
        text = config.read_text().replace(
            "[assets.pump1]", '[gateway]\nprofile_dirs = ["site"]\n\n[assets.pump1]'
        )
        config.write_text(text, encoding="utf-8")

        vib = build_device_specs(load_settings(config, environ={}))["vib"]

        assert sorted(p.name for p in vib.points) == [
            "pressure",
            "temperature",
            "velocity",
        ]

    def test_bundled_profiles_are_valid(self) -> None:
        paths = sorted(BUNDLED_PROFILE_DIR.glob("*.toml"))

        assert paths, f"no profiles in {BUNDLED_PROFILE_DIR}"
        for path in paths:
            assert read_profile(path).problems == []


class TestReadProfile:
    def test_name_must_match_file(self, tmp_path: Path) -> None:
        path = tmp_path / "other-name.toml"
        path.write_text(MODBUS_PROFILE, encoding="utf-8")

        problems = [str(p) for p in read_profile(path).problems]

        assert problems == [
            f"{path}:2: profile.name: expected the file name 'other-name', "
            "found 'test-vib'"
        ]

    def test_unknown_protocol_reported(self, tmp_path: Path) -> None:
        path = tmp_path / "test-vib.toml"
        path.write_text(
            MODBUS_PROFILE.replace('"modbus"', '"bacnet"'), encoding="utf-8"
        )

        problems = [str(p) for p in read_profile(path).problems]

        assert problems == [
            f"{path}:5: profile.protocol: expected 'modbus' or 'opcua', found 'bacnet'"
        ]
