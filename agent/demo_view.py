"""The live view and final summary of ``cmagent demo``.

On a terminal a rich table per asset refreshes every second: last values,
velocity RMS and ISO zone, the strongest envelope lines, the diagnosis with
its confidence, severity and score, plus outbox depth, deliveries and MQTT
messages. Without a terminal (or with ``--no-ui``) the same facts are
printed as one plain line per asset every few seconds.
"""

from __future__ import annotations

from typing import Any, TextIO

from agent.demo_config import DEMO_ASSETS

SEVERITY_STYLE = {"ok": "green", "warning": "yellow", "alarm": "bold red"}


def asset_rows(snapshot: dict[str, Any]) -> list[dict[str, str]]:
    """Return one row of display strings per demo asset."""
    rows = []
    for item in DEMO_ASSETS:
        state = (snapshot.get("assets") or {}).get(item.asset) or {}
        analysis = state.get("analysis") or {}
        values = state.get("values") or {}
        rows.append(
            {
                "asset": item.asset,
                "values": _scalar_text(values, item.expected == "oil"),
                "velocity": _velocity_text(analysis),
                "lines": _lines_text(analysis),
                "diagnosis": _diagnosis_text(analysis),
                "severity": str(state.get("severity", "ok")),
                "score": _number(state.get("score"), "{:.0f}"),
            }
        )
    return rows


def footer_text(snapshot: dict[str, Any], mqtt_messages: int) -> str:
    """Return the one-line totals shown under the table."""
    outbox = snapshot.get("outbox") or {}
    uplink = snapshot.get("uplink") or {}
    counters = snapshot.get("counters") or {}
    return (
        f"waveforms analysed {counters.get('waveforms_analysed', 0)}  "
        f"outbox depth {outbox.get('depth', 0)}  "
        f"delivered {uplink.get('delivered_measurements', 0)} "
        f"({uplink.get('state', '-')})  "
        f"MQTT messages {mqtt_messages}"
    )


def render_table(snapshot: dict[str, Any], mqtt_messages: int, elapsed_s: float) -> Any:
    """Build the rich renderable of the live view."""
    from rich.table import Table

    table = Table(
        title=f"cmagent demo, {elapsed_s:.0f} s",
        caption=footer_text(snapshot, mqtt_messages),
        expand=False,
    )
    for column in (
        "asset",
        "last values",
        "velocity (zone)",
        "envelope lines",
        "diagnosis",
        "severity",
        "score",
    ):
        table.add_column(column)
    for row in asset_rows(snapshot):
        style = SEVERITY_STYLE.get(row["severity"], "")
        table.add_row(
            row["asset"],
            row["values"],
            row["velocity"],
            row["lines"],
            row["diagnosis"],
            f"[{style}]{row['severity']}[/]",
            row["score"],
        )
    return table


def print_plain(
    snapshot: dict[str, Any], mqtt_messages: int, elapsed_s: float, out: TextIO
) -> None:
    """Print the live view as plain lines."""
    print(f"[{elapsed_s:5.0f} s] {footer_text(snapshot, mqtt_messages)}", file=out)
    for row in asset_rows(snapshot):
        print(
            f"  {row['asset']:<13} {row['severity']:<7} score {row['score']:>3}  "
            f"{row['diagnosis']:<22} {row['velocity']:<16} {row['values']}",
            file=out,
        )
    out.flush()


def final_summary_text(summary: dict[str, Any]) -> str:
    """Return the short summary printed when the demo ends."""
    lines = [
        "cmagent demo summary",
        f"  waveforms analysed      {summary['waveforms_analysed']}",
        f"  measurements produced   {summary['measurements_produced']}",
        f"  measurements delivered  {summary['measurements_delivered']}",
        f"  maintenance requests    {summary['maintenance_requests']}",
        f"  MQTT messages received  {summary['mqtt_messages']}",
        "  asset          expected     diagnosis (confidence)     zone  severity",
    ]
    for asset, item in summary["assets"].items():
        diagnosis = item["diagnosis"] or "-"
        if item["confidence"] is not None:
            diagnosis += f" ({item['confidence']:.2f})"
        lines.append(
            f"  {asset:<14} {item['expected']:<12} {diagnosis:<26} "
            f"{item['iso_zone'] or '-':<5} {item['severity']}"
        )
    return "\n".join(lines)


def _scalar_text(values: dict[str, Any], oil: bool) -> str:
    if oil:
        codes = [values.get(n) for n in ("iso4406_4um", "iso4406_6um", "iso4406_14um")]
        code_text = "/".join("-" if c is None else f"{c:.0f}" for c in codes)
        water = _number(values.get("water_saturation"), "{:.0f} %")
        return f"ISO 4406 {code_text}, water {water}"
    parts = []
    for name, fmt in (("accel_rms_x", "{:.3f} g"), ("temperature", "{:.1f} °C")):
        if name in values:
            parts.append(fmt.format(values[name]))
    if "speed" in values:
        parts.append(f"{values['speed']:.0f} rpm")
    return ", ".join(parts) or "-"


def _velocity_text(analysis: dict[str, Any]) -> str:
    velocity = (analysis.get("values") or {}).get("velocity_rms_mm_s")
    if velocity is None:
        return "-"
    return f"{velocity:.2f} mm/s ({analysis.get('iso_zone') or '?'})"


def _lines_text(analysis: dict[str, Any]) -> str:
    lines = analysis.get("envelope_lines") or []
    return (
        ", ".join(
            f"{line['label']} {line['frequency_hz']:.0f} Hz {line['snr_db']:.0f} dB"
            for line in lines[:2]
        )
        or "-"
    )


def _diagnosis_text(analysis: dict[str, Any]) -> str:
    diagnosis = analysis.get("diagnosis")
    if diagnosis is None:
        return "-"
    return f"{diagnosis} ({analysis.get('confidence', 0):.2f})"


def _number(value: Any, fmt: str) -> str:
    return "-" if value is None else fmt.format(value)
