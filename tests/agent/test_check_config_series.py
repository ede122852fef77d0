"""check-config: each (asset, point) series comes from one place only."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from agent.config_check import inspect_config
from agent.errors import ConfigError
from agent.profiles import BUNDLED_PROFILE_DIR, build_device_specs
from agent.settings import load_settings

ROOT = Path(__file__).resolve().parents[2]
VIB_PROFILE = BUNDLED_PROFILE_DIR / "vib-triax-modbus.toml"
OIL_PROFILE = BUNDLED_PROFILE_DIR / "oil-modbus.toml"


def write(path: Path, lines: list[str]) -> Path:
    """Write ``lines`` so that ``lines[i]`` is line ``i + 1`` of the file."""
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def header_line(path: Path, header: str) -> int:
    """Return the line of ``header`` in ``path``, counted by hand."""
    lines = path.read_text(encoding="utf-8").splitlines()
    return lines.index(header) + 1


def profile_names(path: Path, kind: str) -> list[str]:
    return list(tomllib.loads(path.read_text(encoding="utf-8")).get(kind, {}))


def report_lines(path: Path) -> tuple[list[str], list[str]]:
    report = inspect_config(path, environ={})
    return [str(p) for p in report.problems], report.warnings


def device(name: str, profile: str, *extra: str, asset: str = "pump1") -> list[str]:
    return [
        f"[devices.{name}]",
        'driver = "modbus_tcp"',
        'host = "127.0.0.1"',
        f'asset = "{asset}"',
        f'profile = "{profile}"',
        *extra,
    ]


def clash(
    series: str, asset: str, first: str, second: str, device_id: str, name: str
) -> str:
    return (
        f"expected each point name once per asset, found {series!r} of asset "
        f"{asset!r} twice: {first} and {second}, so their values would mix "
        "in one measurement series; give one a new name, as with point_names "
        f'= {{ {name} = "{device_id}_{name}" }} or a point_prefix in '
        f"[devices.{device_id}]"
    )


class TestSeriesClash:
    def test_two_profiles_with_one_point_name(self, tmp_path: Path) -> None:
        path = write(
            tmp_path / "agent.toml",
            [
                "[assets.pump1]",  # 1
                *device("vib", "vib-triax-modbus"),  # 2-6
                *device("oil", "oil-modbus"),  # 7-11
            ],
        )
        vib_line = header_line(VIB_PROFILE, "[points.temperature]")
        oil_line = header_line(OIL_PROFILE, "[points.temperature]")

        problems, _ = report_lines(path)

        assert problems == [
            f"{path}:11: devices.oil.profile: "
            + clash(
                "temperature",
                "pump1",
                f"device 'vib' (point 'temperature', {VIB_PROFILE}:{vib_line})",
                f"device 'oil' (point 'temperature', {OIL_PROFILE}:{oil_line})",
                "oil",
                "temperature",
            )
        ]

    def test_run_rejects_the_clash_too(self, tmp_path: Path) -> None:
        path = write(
            tmp_path / "agent.toml",
            [
                "[assets.pump1]",
                *device("vib", "vib-triax-modbus"),
                *device("oil", "oil-modbus"),
            ],
        )

        with pytest.raises(ConfigError) as caught:
            load_settings(path, environ={})

        (problem,) = caught.value.problems
        assert problem.startswith(f"{path}:11: devices.oil.profile: expected each")

    def test_inline_point_against_profile_point(self, tmp_path: Path) -> None:
        path = write(
            tmp_path / "agent.toml",
            [
                "[assets.pump1]",  # 1
                *device("vib", "vib-triax-modbus"),  # 2-6
                "[devices.tacho]",  # 7
                'driver = "modbus_tcp"',  # 8
                'host = "127.0.0.1"',  # 9
                'asset = "pump1"',  # 10
                "[devices.tacho.points.speed]",  # 11
                "address = 0",  # 12
            ],
        )
        vib_line = header_line(VIB_PROFILE, "[points.speed]")

        problems, _ = report_lines(path)

        assert problems == [
            f"{path}:11: devices.tacho.points.speed: "
            + clash(
                "speed",
                "pump1",
                f"device 'vib' (point 'speed', {VIB_PROFILE}:{vib_line})",
                f"device 'tacho' (point 'speed', {path}:11)",
                "tacho",
                "speed",
            )
        ]

    def test_point_and_waveform_of_one_device(self, tmp_path: Path) -> None:
        path = write(
            tmp_path / "agent.toml",
            [
                "[assets.pump1]",  # 1
                *device("vib", "vib-triax-modbus"),  # 2-6
                "points.accel = { address = 200 }",  # 7
            ],
        )
        waveform_line = header_line(VIB_PROFILE, "[waveforms.accel]")

        problems, _ = report_lines(path)

        assert problems == [
            f"{path}:6: devices.vib.profile: "
            + clash(
                "accel",
                "pump1",
                f"device 'vib' (point 'accel', {path}:7)",
                f"device 'vib' (waveform 'accel', {VIB_PROFILE}:{waveform_line})",
                "vib",
                "accel",
            )
        ]

    def test_point_moved_to_other_asset(self, tmp_path: Path) -> None:
        path = write(
            tmp_path / "agent.toml",
            [
                "[assets.pump1]",  # 1
                "[assets.motor1]",  # 2
                *device("vib", "vib-triax-modbus", asset="motor1"),  # 3-7
                *device("oil", "oil-modbus"),  # 8-12
                "[devices.oil.points.temperature]",  # 13
                "address = 12",  # 14
                'asset = "motor1"',  # 15
            ],
        )

        problems, _ = report_lines(path)

        assert len(problems) == 1
        assert problems[0].startswith(
            f"{path}:13: devices.oil.points.temperature: expected each point "
            "name once per asset, found 'temperature' of asset 'motor1' twice"
        )

    def test_disabled_device_left_out(self, tmp_path: Path) -> None:
        path = write(
            tmp_path / "agent.toml",
            [
                "[assets.pump1]",
                *device("vib", "vib-triax-modbus"),
                *device("spare", "vib-triax-modbus", "enabled = false"),
            ],
        )

        assert report_lines(path) == ([], [])


class TestRenaming:
    def test_point_names_resolve_clash(self, tmp_path: Path) -> None:
        path = write(
            tmp_path / "agent.toml",
            [
                "[assets.pump1]",
                *device("vib", "vib-triax-modbus"),
                *device(
                    "oil",
                    "oil-modbus",
                    'point_names = { temperature = "oil_temperature" }',
                ),
            ],
        )

        assert report_lines(path) == ([], [])
        specs = build_device_specs(load_settings(path, environ={}))
        expected = {*profile_names(OIL_PROFILE, "points"), "oil_temperature"}
        expected.discard("temperature")
        assert {point.name for point in specs["oil"].points} == expected

    def test_point_prefix_renames_profile_and_inline(self, tmp_path: Path) -> None:
        path = write(
            tmp_path / "agent.toml",
            [
                "[assets.pump1]",
                *device("de", "vib-triax-modbus"),
                *device("nde", "vib-triax-modbus", 'point_prefix = "nde_"'),
                "points.bearing_temp = { address = 300 }",
            ],
        )

        assert report_lines(path) == ([], [])
        specs = build_device_specs(load_settings(path, environ={}))
        points = [*profile_names(VIB_PROFILE, "points"), "bearing_temp"]
        waveforms = profile_names(VIB_PROFILE, "waveforms")
        assert [p.name for p in specs["nde"].points] == [f"nde_{n}" for n in points]
        assert [w.name for w in specs["nde"].waveforms] == [
            f"nde_{n}" for n in waveforms
        ]
        assert [p.name for p in specs["de"].points] == points[:-1]

    def test_point_names_beat_prefix(self, tmp_path: Path) -> None:
        path = write(
            tmp_path / "agent.toml",
            [
                "[assets.pump1]",
                *device(
                    "oil",
                    "oil-modbus",
                    'point_prefix = "oil_"',
                    'point_names = { water_saturation = "water_saturation" }',
                ),
            ],
        )

        specs = build_device_specs(load_settings(path, environ={}))

        names = [point.name for point in specs["oil"].points]
        assert "water_saturation" in names
        assert "oil_temperature" in names

    def test_thresholds_and_rpm_point_use_new_names(self, tmp_path: Path) -> None:
        path = write(
            tmp_path / "agent.toml",
            [
                "[assets.pump1]",  # 1
                'rpm_point = "speed"',  # 2
                "thresholds.vib_speed = { alarm = 3000.0 }",  # 3
                *device("vib", "vib-triax-modbus", 'point_prefix = "vib_"'),
            ],
        )

        problems, _ = report_lines(path)

        assert len(problems) == 1
        assert problems[0].startswith(
            f"{path}:2: assets.pump1.rpm_point: expected a point of asset 'pump1' ("
        )
        assert problems[0].endswith("found 'speed'; did you mean 'vib_speed'?")

    def test_unknown_point_names_key_suggested(self, tmp_path: Path) -> None:
        path = write(
            tmp_path / "agent.toml",
            [
                "[assets.pump1]",  # 1
                *device("oil", "oil-modbus"),  # 2-6
                'point_names = { temprature = "oil_temperature" }',  # 7
            ],
        )
        names = ", ".join(repr(n) for n in profile_names(OIL_PROFILE, "points"))

        problems, _ = report_lines(path)

        assert problems == [
            f"{path}:7: devices.oil.point_names.temprature: expected a point or "
            f"waveform of device 'oil' ({names}), found 'temprature'; did you "
            "mean 'temperature'?"
        ]

    def test_prefix_making_name_too_long(self, tmp_path: Path) -> None:
        prefix = "p" * 60
        path = write(
            tmp_path / "agent.toml",
            [
                "[assets.pump1]",  # 1
                "[devices.tacho]",  # 2
                'driver = "modbus_tcp"',  # 3
                'host = "127.0.0.1"',  # 4
                'asset = "pump1"',  # 5
                f'point_prefix = "{prefix}"',  # 6
                "points.speed = { address = 0 }",  # 7
            ],
        )

        problems, _ = report_lines(path)

        assert problems == [
            f"{path}:6: devices.tacho.point_prefix: expected point names of at "
            f"most 64 characters, found {prefix + 'speed'!r} (65) for 'speed'; "
            "shorten point_prefix"
        ]

    @pytest.mark.parametrize("prefix", ["_x", "a b", "ä_"])
    def test_invalid_prefix_rejected(self, tmp_path: Path, prefix: str) -> None:
        path = write(
            tmp_path / "agent.toml",
            [
                "[assets.pump1]",
                *device("oil", "oil-modbus", f'point_prefix = "{prefix}"'),
            ],
        )

        problems, _ = report_lines(path)

        assert problems == [
            f"{path}:7: devices.oil.point_prefix: expected letters, digits, "
            "'_', '.' and '-', starting with a letter or digit (at most 63 "
            f"characters), found {prefix!r}"
        ]

    def test_renamed_oil_point_warned(self, tmp_path: Path) -> None:
        path = write(
            tmp_path / "agent.toml",
            [
                "[assets.pump1]",  # 1
                *device(  # 2-7
                    "oil",
                    "oil-modbus",
                    'point_names = { water_saturation = "oil_water" }',
                ),
            ],
        )

        problems, warnings = report_lines(path)

        assert problems == []
        assert warnings == [
            f"{path}:2: devices.oil: point 'water_saturation' is stored as "
            "'oil_water', so health no longer judges it with the oil limits "
            "of asset 'pump1'; keep its name with point_names = "
            '{ water_saturation = "water_saturation" }'
        ]


class TestExampleConfiguration:
    def test_series_are_distinct(self) -> None:
        settings = load_settings(ROOT / "config" / "agent.example.toml", environ={})

        specs = build_device_specs(settings)

        series = [
            (entry.asset, entry.name)
            for device_spec in specs.values()
            for entry in (*device_spec.points, *device_spec.waveforms)
        ]
        assert len(series) == len(set(series))
        assert ("pump1", "bearing_temperature") in series
        assert ("pump1", "oil_temperature") in series
