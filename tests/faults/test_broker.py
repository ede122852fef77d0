"""MQTT broker faults: a restart, and the broker down for 20 s.

A plant broker may be down for minutes; 20 s stands in for that here,
more than the agent's keepalive (10 s) so the outage is noticed either way.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from agent.demo_config import GATEWAY_ID
from tests.faults.conftest import FaultPlant, Tally, record
from tests.mosquitto import MqttSubscriber

pytestmark = pytest.mark.faults
TOPIC = f"cmagent/v1/{GATEWAY_ID}/pump-healthy/speed"


def assert_nothing_lost(tally: Tally) -> None:
    assert len(tally.produced) > 50
    assert tally.lost == 0
    assert tally.duplicated == 0
    assert tally.evicted == 0
    assert tally.dead_lettered == 0


async def live_value_after(plant: FaultPlant, timeout_s: float) -> float:
    """Wait for a live value on a fresh subscription; return the seconds taken."""
    started = time.monotonic()
    with MqttSubscriber(plant.broker.host, plant.broker.port, (TOPIC,)) as sub:
        await plant.wait_for(lambda: bool(sub.messages(TOPIC)), timeout_s, TOPIC)
    return time.monotonic() - started


class TestBrokerOutage:
    @pytest.mark.parametrize("down_s", [0.0, 20.0])
    async def test_broker_outage(self, plant: FaultPlant, down_s: float) -> None:
        """Broker stopped for ``down_s`` seconds; delivery to the API goes on."""
        plant.write_config()
        await plant.start_agent()
        await live_value_after(plant, 15.0)

        plant.broker.stop()
        before = plant.stored_count("pump-healthy")
        await asyncio.sleep(down_s)
        during = plant.stored_count("pump-healthy") - before
        state_during = ((plant.status() or {}).get("mqtt") or {}).get("state")
        plant.broker.start()
        recover_s = await live_value_after(plant, 60.0)
        tally = await plant.drain_and_stop()

        record(
            f"MQTT broker down {down_s:.0f} s" if down_s else "MQTT broker restart",
            tally,
            faults=1,
            recover_s=recover_s,
            note=f"{during} measurements stored while the broker was down",
        )
        if down_s:
            assert state_during != "connected"
            assert during >= 10
        assert recover_s < 30.0
        assert_nothing_lost(tally)
