"""Publishing rate of MqttPublisher against a bare paho-mqtt client.

Both publish the same number of readings to one local Mosquitto in the same
run, at QoS 0 and QoS 1. The bare client publishes pre-encoded payloads
from a tight loop, so the ratio shows what encoding, topic checks and the
queue logic cost. A run counts as done when paho reports every message
sent (QoS 0) or acknowledged (QoS 1). Each figure is the best of a few
rounds.

Run with ``.venv/bin/python bench/mqtt.py [--count N] [--rounds R]``.
"""

from __future__ import annotations

import argparse
import asyncio
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime

import paho.mqtt.client as paho

from agent.broker import RunningBroker, start_broker
from agent.mqtt import MqttPublisher, PublisherState
from agent.mqtt_payloads import encode_reading
from agent.settings import MqttSettings
from drivers.base import Reading

TOPIC = "cmagent/v1/bench/pump-1/bearing_temp"


def readings(count: int) -> list[Reading]:
    now = datetime.now(UTC)
    return [
        Reading(
            asset="pump-1",
            point="bearing_temp",
            timestamp=now,
            value=20.0 + i * 0.001,
            unit="degC",
        )
        for i in range(count)
    ]


def wait_for(condition: Callable[[], bool], timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("benchmark did not finish in time")
        time.sleep(0.001)


def run_publisher(broker: RunningBroker, qos: int, count: int) -> tuple[float, float]:
    """Return (messages per second, caller seconds per message)."""
    settings = MqttSettings(
        host=broker.host, port=broker.port, qos_readings=qos, queue_size=count
    )
    publisher = MqttPublisher(settings, "bench")
    publisher.start()
    wait_for(lambda: publisher.state is PublisherState.CONNECTED)
    wait_for(lambda: publisher.counters.published >= 1)
    items = readings(count)
    before = publisher.counters.published

    start = time.perf_counter()
    for reading in items:
        publisher.publish_reading(reading)
    caller_s = time.perf_counter() - start
    wait_for(lambda: publisher.counters.published - before >= count)
    elapsed_s = time.perf_counter() - start

    publisher.stop()
    return count / elapsed_s, caller_s / count


def run_bare_paho(broker: RunningBroker, qos: int, count: int) -> tuple[float, float]:
    """Return (messages per second, caller seconds per message)."""
    done = threading.Semaphore(0)
    client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="bench-bare")
    client.on_publish = lambda *args: done.release()
    client.connect(broker.host, broker.port)
    client.loop_start()
    payloads = [encode_reading(r) for r in readings(count)]

    start = time.perf_counter()
    for payload in payloads:
        client.publish(TOPIC, payload, qos=qos)
    caller_s = time.perf_counter() - start
    for _ in range(count):
        done.acquire(timeout=120)
    elapsed_s = time.perf_counter() - start

    client.disconnect()
    client.loop_stop()
    return count / elapsed_s, caller_s / count


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    broker = await start_broker(prefer="mosquitto")
    try:
        print(f"{args.count} messages per round, best of {args.rounds} rounds")
        print("qos  bare paho msg/s  MqttPublisher msg/s  ratio  caller µs/msg")
        for qos in (0, 1):
            bare = max(
                run_bare_paho(broker, qos, args.count)[0] for _ in range(args.rounds)
            )
            ours = [run_publisher(broker, qos, args.count) for _ in range(args.rounds)]
            rate = max(r for r, _ in ours)
            caller_us = min(c for _, c in ours) * 1e6
            print(
                f"{qos:>3}  {bare:>15,.0f}  {rate:>19,.0f}  {rate / bare:>5.2f}"
                f"  {caller_us:>13.1f}"
            )
    finally:
        await broker.stop()


if __name__ == "__main__":
    asyncio.run(main())
