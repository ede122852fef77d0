"""Checks of the shipped systemd files with systemd's own tools.

``systemd-analyze verify`` parses the unit as systemd would, and
``systemd-analyze security --offline=true`` scores its sandboxing. The
sysusers and tmpfiles snippets are applied to a scratch root directory.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from agent.service import EXIT_CONFIG_ERROR
from agent.uplink.token import MQTT_CREDENTIAL, UPLINK_CREDENTIAL

SYSTEMD_DIR = Path(__file__).resolve().parents[1] / "systemd"
UNIT = SYSTEMD_DIR / "cmagent.service"
INSTALLED_EXECUTABLE = "/opt/cmagent/venv/bin/cmagent"
MAX_EXPOSURE = 2.0
EXPOSURE_LINE = re.compile(r"Overall exposure level for \S+: (\d+(?:\.\d+)?)")


def systemd_tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(
            f"{name} not found: the systemd unit checks need it. "
            f"Install it with `apt-get install systemd`."
        )
    return path


def unit_assignments(text: str) -> dict[str, list[str]]:
    """Map each key to its values in file order (keys may repeat)."""
    assignments: dict[str, list[str]] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";", "[")):
            continue
        key, _, value = line.partition("=")
        assignments.setdefault(key, []).append(value)
    return assignments


def verify(unit: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [systemd_tool("systemd-analyze"), "verify", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def runnable_copy(tmp_path: Path, text: str) -> Path:
    """Write the unit with ExecStart pointing at an existing executable,
    because verify rejects a command that is not installed here."""
    assert INSTALLED_EXECUTABLE in text
    copy = tmp_path / "cmagent.service"
    copy.write_text(text.replace(INSTALLED_EXECUTABLE, shutil.which("true") or ""))
    return copy


class TestServiceUnit:
    def test_verify_passes(self, tmp_path: Path) -> None:
        result = verify(runnable_copy(tmp_path, UNIT.read_text()))

        assert result.stderr == ""
        assert result.returncode == 0

    @pytest.mark.parametrize(
        ("replacement", "expected"),
        [
            ("WatchdogSec=soon", "Failed to parse sec value, ignoring: soon"),
            ("WatchdogSecs=30s", "Unknown key 'WatchdogSecs'"),
        ],
    )
    def test_verify_reports_mistake(
        self, tmp_path: Path, replacement: str, expected: str
    ) -> None:
        # systemd ignores such lines and verify still exits 0, which is why
        # test_verify_passes requires empty output.
        broken = UNIT.read_text().replace("WatchdogSec=30s", replacement)

        result = verify(runnable_copy(tmp_path, broken))

        assert expected in result.stderr

    def test_security_exposure_within_limit(self) -> None:
        result = subprocess.run(
            [
                systemd_tool("systemd-analyze"),
                "security",
                "--offline=true",
                "--no-pager",
                str(UNIT),
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

        match = EXPOSURE_LINE.search(result.stdout)
        assert match is not None, result.stdout + result.stderr
        exposure = float(match.group(1))
        exposed = [line for line in result.stdout.splitlines() if "✗" in line]
        assert exposure <= MAX_EXPOSURE, "\n".join(exposed)

    def test_notify_and_watchdog_contract(self) -> None:
        unit = unit_assignments(UNIT.read_text())

        assert unit["Type"] == ["notify"]
        assert unit["NotifyAccess"] == ["main"]
        assert unit["WatchdogSec"] == ["30s"]
        assert unit["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
        assert unit["ExecStart"] == [
            f"{INSTALLED_EXECUTABLE} run --config /etc/cmagent/agent.toml"
        ]

    def test_config_error_status_not_restarted(self) -> None:
        unit = unit_assignments(UNIT.read_text())

        assert unit["Restart"] == ["on-failure"]
        assert unit["RestartPreventExitStatus"] == [str(EXIT_CONFIG_ERROR)]

    def test_credentials_match_agent_names(self) -> None:
        unit = unit_assignments(UNIT.read_text())

        loaded = {value.partition(":")[0] for value in unit["LoadCredential"]}

        assert loaded == {UPLINK_CREDENTIAL, MQTT_CREDENTIAL}

    def test_runs_as_sysusers_account(self) -> None:
        unit = unit_assignments(UNIT.read_text())
        sysusers = (SYSTEMD_DIR / "cmagent.sysusers").read_text()

        assert unit["User"] == ["cmagent"]
        assert unit["SupplementaryGroups"] == ["dialout"]
        assert re.search(r"^u cmagent ", sysusers, re.MULTILINE)
        assert re.search(r"^m cmagent dialout$", sysusers, re.MULTILINE)


class TestSysusers:
    def test_creates_user_in_dialout(self, tmp_path: Path) -> None:
        (tmp_path / "etc").mkdir()
        subprocess.run(
            [systemd_tool("systemd-sysusers"), f"--root={tmp_path}", "-"],
            input=(SYSTEMD_DIR / "cmagent.sysusers").read_text(),
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )

        passwd = (tmp_path / "etc" / "passwd").read_text().splitlines()
        group = (tmp_path / "etc" / "group").read_text().splitlines()
        [user] = [line.split(":") for line in passwd if line.startswith("cmagent:")]
        [dialout] = [line.split(":") for line in group if line.startswith("dialout:")]
        assert user[5] == "/var/lib/cmagent"
        assert user[6].endswith("nologin")
        assert "cmagent" in dialout[3].split(",")


class TestTmpfiles:
    def test_creates_private_credstores(self, tmp_path: Path) -> None:
        subprocess.run(
            [systemd_tool("systemd-tmpfiles"), f"--root={tmp_path}", "--create", "-"],
            input=(SYSTEMD_DIR / "cmagent.tmpfiles").read_text(),
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )

        for name in ("credstore", "credstore.encrypted"):
            mode = (tmp_path / "etc" / name).stat().st_mode & 0o7777
            assert mode == 0o700, f"/etc/{name}: mode {mode:o}"
