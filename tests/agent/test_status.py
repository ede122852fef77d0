"""``cmagent status`` rendering and outbox reading, on files written here."""

from __future__ import annotations

import os
import sqlite3
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from agent.cli import main
from agent.commands.status import collect_status, read_outbox, render
from agent.outbox import Outbox, OutboxItem, Priority
from agent.state import write_status


def snapshot(**changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "written_at": datetime.now(UTC).isoformat(),
        "pid": os.getpid(),
        "running": True,
        "gateway": "gw1",
        "devices": {
            "vib1": {
                "state": "down",
                "last_reading_at": None,
                "last_error": "connection refused",
            }
        },
        "assets": {
            "pump2": {
                "severity": "alarm",
                "score": 35.0,
                "episode_id": "pump2:alarm:1",
                "active": {"bearing_fault": {"severity": "alarm", "event_id": "x"}},
            },
            "pump1": {"severity": "ok", "score": 99.0, "active": {}},
        },
        "uplink": {"state": "retrying", "last_delivery": None, "delivered_count": 7},
        "mqtt": {"state": "connected", "published": 12, "dropped": 0},
    }
    data.update(changes)
    return data


def measurement(i: int) -> OutboxItem:
    return OutboxItem(
        kind="measurement",
        priority=Priority.INDICATOR,
        payload={"asset": "pump1", "name": "rms", "value": float(i)},
    )


class TestStatusReport:
    def test_running_agent_with_alarm(self, tmp_path: Path) -> None:
        write_status(tmp_path, snapshot())

        text = render(collect_status(tmp_path))

        assert "agent: running (gateway gw1" in text
        assert "vib1             down" in text
        assert "(connection refused)" in text
        assert "pump2            alarm    score 35.0, episode pump2:alarm:1" in text
        assert "pump1" not in text.split("alarms:")[1]

    def test_disabled_uplink_explains_growing_outbox(self, tmp_path: Path) -> None:
        write_status(tmp_path, snapshot(uplink={"state": "disabled"}))

        text = render(collect_status(tmp_path))
        (line,) = [x for x in text.splitlines() if x.startswith("uplink:")]

        assert line.startswith("uplink: disabled; the outbox keeps measurements")
        assert "set uplink.enabled = true" in line

    def test_long_device_names_keep_columns(self, tmp_path: Path) -> None:
        devices = {
            "vib1": {"state": "up", "last_reading_at": None},
            "pump-healthy-sensor-north": {"state": "down", "last_reading_at": None},
        }
        write_status(tmp_path, snapshot(devices=devices))

        text = render(collect_status(tmp_path))
        lines = text.split("devices:\n")[1].splitlines()[:2]

        # "pump-healthy-sensor-north" is 25 characters, so the state column
        # starts after it and one space, at the same place on both lines.
        assert lines[0].index("down") == 2 + 25 + 1
        assert lines[1].index("up") == 2 + 25 + 1

    def test_device_with_one_bad_point(self, tmp_path: Path) -> None:
        cause = "device 'vib1' unit 1 function 3 address 0 count 1: ILLEGAL DATA"
        first = {"asset": "pump1", "point": "status_word", "cause": cause}
        devices = {
            "vib1": {
                "state": "connected",
                "last_reading_at": "2025-03-01T10:00:00+00:00",
                "last_error": None,
                "bad_points": {"count": 1, "first": first},
            }
        }
        write_status(tmp_path, snapshot(devices=devices))

        text = render(collect_status(tmp_path))
        (line,) = [x for x in text.splitlines() if x.startswith("  vib1")]

        assert line == (
            "  vib1             connected  last reading 2025-03-01T10:00:00+00:00"
            f"; 1 bad point, pump1/status_word: {cause}"
        )

    def test_device_with_several_bad_points(self, tmp_path: Path) -> None:
        first = {"asset": "pump1", "point": "speed", "cause": "bad/timeout"}
        devices = {
            "vib1": {
                "state": "down",
                "last_reading_at": None,
                "last_error": "connection refused",
                "bad_points": {"count": 3, "first": first},
            }
        }
        write_status(tmp_path, snapshot(devices=devices))

        text = render(collect_status(tmp_path))

        assert (
            "never  (connection refused); 3 bad points, first "
            "pump1/speed: bad/timeout" in text
        )

    @pytest.mark.parametrize(
        "bad_points", [None, {"count": 0, "first": None}], ids=["absent", "none"]
    )
    def test_device_without_bad_points(
        self, tmp_path: Path, bad_points: dict[str, Any] | None
    ) -> None:
        device: dict[str, Any] = {"state": "connected", "last_reading_at": None}
        if bad_points is not None:
            device["bad_points"] = bad_points
        write_status(tmp_path, snapshot(devices={"vib1": device}))

        text = render(collect_status(tmp_path))

        assert "bad point" not in text
        assert "  vib1             connected  last reading never\n" in text

    def test_stale_snapshot_is_not_running(self, tmp_path: Path) -> None:
        old = (datetime.now(UTC) - timedelta(minutes=5)).isoformat()
        write_status(tmp_path, snapshot(written_at=old))

        report = collect_status(tmp_path)

        assert report["running"] is False

    def test_outbox_depth_and_oldest(self, tmp_path: Path) -> None:
        outbox = Outbox(tmp_path / "outbox.db", max_bytes=1_000_000)
        outbox.put_many([measurement(i) for i in range(3)])
        outbox.close()
        time.sleep(0.2)

        figures = read_outbox(tmp_path / "outbox.db")

        assert figures is not None
        assert figures["depth"] == 3
        assert figures["depth_by_kind"] == {"measurement": 3}
        assert figures["oldest_age_s"] >= 0.1

    def test_unreadable_outbox_reported(self, tmp_path: Path) -> None:
        (tmp_path / "outbox.db").write_bytes(b"not a database at all" * 100)

        figures = read_outbox(tmp_path / "outbox.db")

        assert figures is not None
        assert "cannot read" in figures["error"]

    def test_read_only_access(self, tmp_path: Path) -> None:
        outbox = Outbox(tmp_path / "outbox.db", max_bytes=1_000_000)
        outbox.put_many([measurement(1)])

        read_outbox(tmp_path / "outbox.db")
        outbox.put_many([measurement(2)])

        assert outbox.stats().depth == 2
        outbox.close()
        with sqlite3.connect(tmp_path / "outbox.db") as conn:
            assert conn.execute("SELECT COUNT(*) FROM items").fetchone()[0] == 2


class TestStatusCommand:
    def test_missing_state_dir_named(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        missing = tmp_path / "nonexistent"
        assert main(["status", "--state-dir", str(missing)]) == 1
        err = capsys.readouterr().err
        assert f"state directory {missing} not found" in err
        assert "no status.json" not in err

    def test_state_dir_that_is_a_file(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        path = tmp_path / "agent.toml"
        path.write_text("[gateway]\n")

        assert main(["status", "--state-dir", str(path)]) == 1
        err = capsys.readouterr().err
        assert f"{path}: expected the agent's state directory, found a file" in err

    def test_unreadable_status_file(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        # A directory in place of status.json fails to open even for root.
        (tmp_path / "status.json").mkdir()

        assert main(["status", "--state-dir", str(tmp_path)]) == 1
        err = capsys.readouterr().err
        assert f"cannot read {tmp_path / 'status.json'}: Is a directory" in err
        assert "no status.json" not in err

    def test_corrupt_status_file_not_called_missing(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        (tmp_path / "status.json").write_text("{bad")

        assert main(["status", "--state-dir", str(tmp_path)]) == 1
        err = capsys.readouterr().err
        assert "unreadable status.json" in err
        assert "no status.json" not in err

    def test_invalid_config_lists_its_problems(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        path = tmp_path / "agent.toml"
        path.write_text("[gateway]\nstate_dir = = 1\n")

        assert main(["status", "--config", str(path)]) == 1
        err = capsys.readouterr().err
        assert f"{path}:2:" in err
        assert "cmagent status: invalid configuration" in err
        assert "Traceback" not in err
