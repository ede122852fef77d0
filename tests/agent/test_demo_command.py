"""``cmagent demo``: the embedded broker, and the state kept by
``--state-dir`` for ``cmagent status``."""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest

from agent.commands.demo import demo_command


def cmagent(*args: str, timeout_s: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agent", *args],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )


class TestDemoBroker:
    @pytest.mark.slow
    def test_runs_on_embedded_broker(self, tmp_path: Path) -> None:
        # The embedded amqtt broker runs in the demo's own event loop, so
        # any blocking wait in the demo's start-up stalls it.
        summary = tmp_path / "summary.json"
        demo = cmagent(
            "demo", "--duration", "5", "--no-ui", "--broker", "amqtt",
            "--summary", str(summary),
        )  # fmt: skip
        assert demo.returncode == 0, demo.stderr

        result = json.loads(summary.read_text())
        assert result["mqtt_by_kind"]["status"] >= 1
        assert result["mqtt_by_kind"]["reading"] > 0
        assert result["measurements_delivered"] == result["measurements_produced"]

    def test_rejects_unknown_broker(self) -> None:
        demo = cmagent("demo", "--duration", "1", "--broker", "hivemq")
        assert demo.returncode == 2
        assert "--broker" in demo.stderr
        assert "'hivemq'" in demo.stderr


class TestDemoStateDir:
    @pytest.mark.slow
    def test_status_reads_kept_state(self, tmp_path: Path) -> None:
        state = tmp_path / "state"
        demo = cmagent("demo", "--duration", "6", "--no-ui", "--state-dir", str(state))
        assert demo.returncode == 0, demo.stderr

        status = cmagent("status", "--state-dir", str(state), "--json")
        assert status.returncode == 0, status.stderr
        report = json.loads(status.stdout)
        assert report["running"] is False
        assert report["outbox"]["delivered"] > 0
        assert report["outbox"]["depth"] == 0
        assert "pump-outer" in report["snapshot"]["assets"]

    def test_rejects_directory_with_files(self, tmp_path: Path) -> None:
        (tmp_path / "notes.txt").write_text("keep me\n")
        demo = cmagent("demo", "--duration", "1", "--state-dir", str(tmp_path))
        assert demo.returncode == 2
        assert "--state-dir" in demo.stderr
        assert str(tmp_path) in demo.stderr
        assert (tmp_path / "notes.txt").read_text() == "keep me\n"


class TestDemoLogging:
    def test_library_errors_kept_out(self, tmp_path: Path) -> None:
        (tmp_path / "notes.txt").write_text("keep me\n")
        args = argparse.Namespace(
            mqtt=None, duration=1.0, state_dir=tmp_path, no_ui=True,
            summary=None, broker="auto",
        )  # fmt: skip
        names = ("asyncua", "pymodbus", "amqtt")
        levels = {name: logging.getLogger(name).level for name in names}
        try:
            # Returns 2 for the non-empty directory, after logging is set up.
            assert demo_command(args) == 2
            for name in names:
                assert not logging.getLogger(name).isEnabledFor(logging.ERROR), name
        finally:
            for name, level in levels.items():
                logging.getLogger(name).setLevel(level)
