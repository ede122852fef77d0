"""``cmagent status``: what the agent is doing, from its state directory.

Reads the status snapshot the agent rewrites every few seconds and the
outbox database itself (read-only, so a running agent is not disturbed),
which gives the true backlog even after the agent stopped.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

DEFAULT_STATE_DIR: Final = Path("/var/lib/cmagent")
STALE_AFTER_S: Final = 15.0
"""A snapshot older than this is from an agent that no longer runs."""


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "status",
        help="show device states, alarms, outbox depth and last delivery",
        description="Show the state of a running or stopped agent from its "
        "state directory.",
    )
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=None,
        help=f"the agent's state directory (default {DEFAULT_STATE_DIR}, or "
        "gateway.state_dir of --config)",
    )
    parser.add_argument(
        "--config", type=Path, help="read the state directory from this configuration"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(handler=status_command)


def status_command(args: argparse.Namespace) -> int:
    from agent.errors import ConfigError

    try:
        state_dir = _state_dir(args)
    except ConfigError as exc:
        for line in exc.problems:
            print(line, file=sys.stderr)
        print(f"cmagent status: {exc}", file=sys.stderr)
        return 1
    if not state_dir.exists():
        print(
            f"cmagent status: state directory {state_dir} not found; pass the "
            "agent's state directory with --state-dir, or its configuration "
            "with --config",
            file=sys.stderr,
        )
        return 1
    if not state_dir.is_dir():
        print(
            f"cmagent status: {state_dir}: expected the agent's state directory, "
            "found a file",
            file=sys.stderr,
        )
        return 1
    report = collect_status(state_dir)
    if report["snapshot"] is None and report["outbox"] is None:
        if not (state_dir / "status.json").exists():
            print(
                f"cmagent status: no status.json or outbox.db found in "
                f"{state_dir}; pass --state-dir or --config",
                file=sys.stderr,
            )
        return 1
    if args.json:
        print(json.dumps(report, indent=2, sort_keys=True))
    else:
        print(render(report))
    return 0


def _state_dir(args: argparse.Namespace) -> Path:
    if args.state_dir is not None:
        return Path(args.state_dir)
    if args.config is not None:
        from agent.settings import load_settings

        return Path(load_settings(args.config).gateway.state_dir)
    return DEFAULT_STATE_DIR


def collect_status(state_dir: Path) -> dict[str, Any]:
    """Return the snapshot, the outbox figures and whether the agent runs."""
    from agent.state import read_status

    try:
        snapshot = read_status(state_dir)
    except ValueError as exc:
        snapshot = None
        print(f"cmagent status: unreadable status.json: {exc}", file=sys.stderr)
    except OSError as exc:
        snapshot = None
        print(
            f"cmagent status: cannot read {exc.filename}: {exc.strerror}",
            file=sys.stderr,
        )
    return {
        "state_dir": str(state_dir),
        "running": _running(snapshot),
        "snapshot": snapshot,
        "outbox": read_outbox(state_dir / "outbox.db"),
    }


def read_outbox(path: Path) -> dict[str, Any] | None:
    """Read depth, oldest item and counters from an outbox file, read-only."""
    if not path.exists():
        return None
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=2.0)
        try:
            depth, oldest = conn.execute(
                "SELECT COUNT(*), MIN(created) FROM items"
            ).fetchone()
            by_kind = dict(
                conn.execute("SELECT kind, COUNT(*) FROM items GROUP BY kind")
            )
            counters = dict(conn.execute("SELECT name, value FROM counters"))
        finally:
            conn.close()
    except sqlite3.Error as exc:
        return {"error": f"cannot read {path}: {exc}"}
    return {
        "depth": depth,
        "depth_by_kind": by_kind,
        "oldest_age_s": None if oldest is None else round(time.time() - oldest, 1),
        **counters,
    }


def _running(snapshot: dict[str, Any] | None) -> bool:
    if snapshot is None or not snapshot.get("running"):
        return False
    written = datetime.fromisoformat(snapshot["written_at"])
    age_s = (datetime.now(UTC) - written).total_seconds()
    return age_s < STALE_AFTER_S and _pid_alive(int(snapshot.get("pid", 0)))


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def render(report: dict[str, Any]) -> str:
    """Format a status report for a terminal."""
    snapshot = report["snapshot"] or {}
    lines = [_agent_line(report, snapshot)]
    outbox = report["outbox"]
    if outbox is not None and "error" not in outbox:
        oldest = outbox["oldest_age_s"]
        lines.append(
            f"outbox: depth {outbox['depth']}"
            + (f" (oldest {oldest:.0f} s)" if oldest is not None else "")
            + f", delivered {outbox.get('delivered', 0)}, evicted "
            f"{outbox.get('evicted', 0)}, dead letters {outbox.get('dead_lettered', 0)}"
        )
    elif outbox is not None:
        lines.append(f"outbox: {outbox['error']}")
    uplink = snapshot.get("uplink") or {}
    if uplink.get("state") == "disabled":
        lines.append(
            "uplink: disabled; the outbox keeps measurements until its byte "
            "cap evicts the lowest-priority, oldest ones (set uplink.enabled = "
            "true to deliver them)"
        )
    elif uplink:
        lines.append(
            f"uplink: {uplink.get('state')}, last delivery "
            f"{uplink.get('last_delivery') or 'never'}, delivered "
            f"{uplink.get('delivered_count', 0)}"
        )
    mqtt = snapshot.get("mqtt") or {}
    if mqtt:
        lines.append(
            f"mqtt: {mqtt.get('state')}, published {mqtt.get('published', 0)}, "
            f"dropped {mqtt.get('dropped', 0)}"
        )
    devices = snapshot.get("devices") or {}
    if devices:
        lines.append("devices:")
        width = max(16, *(len(device_id) for device_id in devices))
        for device_id, device in sorted(devices.items()):
            error = f"  ({device['last_error']})" if device.get("last_error") else ""
            lines.append(
                f"  {device_id:<{width}} {device['state']:<10} last reading "
                f"{device.get('last_reading_at') or 'never'}{error}"
                f"{_bad_points_text(device.get('bad_points'))}"
            )
    lines.extend(_alarm_lines(snapshot.get("assets") or {}))
    return "\n".join(lines)


def _bad_points_text(bad_points: dict[str, Any] | None) -> str:
    """Describe a device's bad points, or return "" when it has none.

    Snapshots written before devices reported bad points have no entry.
    """
    if not bad_points or not bad_points.get("count"):
        return ""
    count = bad_points["count"]
    first = bad_points.get("first") or {}
    where = f"{first.get('asset')}/{first.get('point')}: {first.get('cause')}"
    if count == 1:
        return f"; 1 bad point, {where}"
    return f"; {count} bad points, first {where}"


def _agent_line(report: dict[str, Any], snapshot: dict[str, Any]) -> str:
    if not snapshot:
        return f"agent: no status snapshot in {report['state_dir']}"
    state = "running" if report["running"] else "not running"
    return (
        f"agent: {state} (gateway {snapshot.get('gateway')}, pid "
        f"{snapshot.get('pid')}, status written {snapshot.get('written_at')})"
    )


def _alarm_lines(assets: dict[str, Any]) -> list[str]:
    active = {a: s for a, s in assets.items() if s.get("severity", "ok") != "ok"}
    if not active:
        return ["alarms: none active"]
    lines = ["alarms:"]
    width = max(16, *(len(asset) for asset in active))
    for asset, state in sorted(active.items()):
        indicators = ", ".join(
            f"{name} {item['severity']}"
            for name, item in sorted((state.get("active") or {}).items())
        )
        episode = state.get("episode_id")
        lines.append(
            f"  {asset:<{width}} {state['severity']:<8} score {state.get('score')}"
            + (f", episode {episode}" if episode else "")
            + (f": {indicators}" if indicators else "")
        )
    return lines
