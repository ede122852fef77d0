"""MqttPublisher across broker outages: queueing, drops, alarm replay."""

from __future__ import annotations

from agent.mqtt import PublisherState
from tests.agent.mqtt_support import (
    BASE,
    READING_TOPIC,
    STATUS,
    make_reading,
    wait_until,
)
from tests.mosquitto import MosquittoBroker, MqttSubscriber

ALARM_TOPIC = f"{BASE}/pump-1/alarm"


def wait_for_outage_and_return(broker: MosquittoBroker, publisher) -> None:
    broker.stop()
    assert wait_until(lambda: publisher.state is PublisherState.DISCONNECTED)
    broker.start()
    assert wait_until(lambda: publisher.state is PublisherState.CONNECTED)


class TestMqttPublisherOutage:
    QUEUE_SIZE = 10

    def test_start_while_broker_down(self, mosquitto_factory, connect) -> None:
        broker: MosquittoBroker = mosquitto_factory()
        broker.stop()

        publisher = connect(broker, wait=False)
        assert wait_until(lambda: publisher.last_error is not None)
        assert publisher.state is PublisherState.DISCONNECTED
        assert "ConnectionRefusedError" in (publisher.last_error or "")
        broker.start()

        assert wait_until(lambda: publisher.state is PublisherState.CONNECTED)

    def test_queue_keeps_newest_and_counts_drops(
        self, mosquitto_factory, connect
    ) -> None:
        # Persistence keeps the subscriber's session across the restart, so
        # the QoS 1 messages flushed on reconnect reach it whichever of the
        # two clients reconnects first.
        broker: MosquittoBroker = mosquitto_factory(persistence=True)
        subscriber = MqttSubscriber(
            broker.host,
            broker.port,
            (f"{BASE}/#",),
            client_id="outage-subscriber",
            clean_session=False,
        )
        publisher = connect(broker, qos_readings=1, queue_size=self.QUEUE_SIZE)
        try:
            publisher.publish_reading(make_reading(-1.0))
            subscriber.wait_for(READING_TOPIC)
            broker.stop()
            assert wait_until(lambda: publisher.state is PublisherState.DISCONNECTED)

            sent_while_down = 25
            for value in range(sent_while_down):
                publisher.publish_reading(make_reading(float(value)))
            counters = publisher.counters

            expected_dropped = sent_while_down - self.QUEUE_SIZE
            assert counters.dropped == expected_dropped
            assert counters.queued == self.QUEUE_SIZE

            broker.start()
            assert wait_until(lambda: publisher.state is PublisherState.CONNECTED)
            kept = set(range(expected_dropped, sent_while_down))
            assert wait_until(lambda: kept <= received_values(subscriber))
            assert received_values(subscriber) & set(range(expected_dropped)) == set()
            assert publisher.counters.queued == 0
            assert publisher.counters.dropped == expected_dropped
        finally:
            subscriber.close()

    def test_readings_resume_after_restart(
        self, mosquitto: MosquittoBroker, connect
    ) -> None:
        publisher = connect(mosquitto)

        mosquitto.restart()
        with MqttSubscriber(mosquitto.host, mosquitto.port) as subscriber:
            # Publish until one arrives; the publisher reconnects after a
            # backoff of 1 s, and readings sent before that are queued.
            def arrived() -> bool:
                publisher.publish_reading(make_reading(7.0))
                return bool(subscriber.messages(READING_TOPIC))

            assert wait_until(arrived, timeout_s=10.0)

    def test_alarm_published_again_after_restart(
        self, mosquitto: MosquittoBroker, connect
    ) -> None:
        publisher = connect(mosquitto)
        publisher.publish_alarm("pump-1", {"severity": "warning", "event": "e-7"})
        assert wait_until(lambda: publisher.counters.published >= 2)

        # Without persistence the restarted broker has no retained messages,
        # so a retained alarm after the restart was published again.
        wait_for_outage_and_return(mosquitto, publisher)

        with MqttSubscriber(mosquitto.host, mosquitto.port) as late:
            alarm = late.wait_for(ALARM_TOPIC)
            status = late.wait_for(STATUS)
        assert alarm.retain
        assert alarm.json()["event"] == "e-7"
        assert alarm.json()["severity"] == "warning"
        assert status.payload == b"online"

    def test_alarm_raised_while_down_sent_on_reconnect(
        self, mosquitto: MosquittoBroker, connect
    ) -> None:
        publisher = connect(mosquitto)
        mosquitto.stop()
        assert wait_until(lambda: publisher.state is PublisherState.DISCONNECTED)

        publisher.publish_alarm("pump-1", {"severity": "alarm", "event": "e-8"})
        publisher.publish_alarm("pump-1", {"severity": "ok", "event": "e-8"})
        mosquitto.start()
        assert wait_until(lambda: publisher.state is PublisherState.CONNECTED)

        with MqttSubscriber(mosquitto.host, mosquitto.port) as late:
            alarm = late.wait_for(ALARM_TOPIC)
        assert alarm.json()["severity"] == "ok"


def received_values(subscriber: MqttSubscriber) -> set[float]:
    return {m.json()["value"] for m in subscriber.messages(READING_TOPIC)}
