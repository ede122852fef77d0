"""A data-change subscription that keeps the latest value of each node.

The server is asked for a keep-alive in every publishing interval without
data changes, so a healthy subscription is heard from at least once per
interval. :meth:`ScalarSubscription.silent_for_s` tells the driver how long
it has been quiet; the driver recreates the subscription when that exceeds
three intervals or when the server reports a bad subscription status.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Sequence
from typing import Any, Final

from asyncua import Client, ua

logger = logging.getLogger(__name__)

# Requested lifetime in publishing intervals: how long the server keeps the
# subscription when the client stops sending publish requests.
_LIFETIME_INTERVALS: Final = 30


class _ChangeHandler:
    """Receives notifications from asyncua and stores them in the feed."""

    def __init__(self, feed: ScalarSubscription) -> None:
        self._feed = feed

    def datachange_notification(self, node: Any, val: Any, data: Any) -> None:
        self._feed.store(node.nodeid, data.monitored_item.Value)

    def status_change_notification(self, status: Any) -> None:
        self._feed.mark_status(status.Status)


def disable_library_watchdog(client: Client) -> None:
    """Leave stale-subscription recovery to the driver alone.

    asyncua 2.1 recreates a subscription it considers stale by itself. Two
    owners would race to delete and recreate the same subscription, so the
    library's check is set to never fire.
    """
    if hasattr(client, "_stale_check_margin"):
        client._stale_check_margin = math.inf


class ScalarSubscription:
    """One subscription over the point nodes of a device.

    Args:
        client: a connected asyncua client.
        node_ids: the nodes to monitor.
        publishing_interval_s: requested publishing interval.
    """

    def __init__(
        self,
        client: Client,
        node_ids: Sequence[ua.NodeId],
        publishing_interval_s: float,
    ) -> None:
        self._client = client
        self._node_ids = tuple(node_ids)
        self.publishing_interval_s = publishing_interval_s
        self.latest: dict[ua.NodeId, tuple[ua.DataValue, float]] = {}
        self.rejected: dict[ua.NodeId, ua.StatusCode] = {}
        self.lost_status: ua.StatusCode | None = None
        self._subscription: Any = None
        self._heard_at = 0.0

    async def create(self) -> None:
        """Create the subscription and its monitored items on the server.

        Raises:
            asyncua and OS exceptions, translated by the caller.
        """
        interval_ms = self.publishing_interval_s * 1000.0
        params = ua.CreateSubscriptionParameters(
            RequestedPublishingInterval=interval_ms,
            RequestedLifetimeCount=_LIFETIME_INTERVALS,
            RequestedMaxKeepAliveCount=1,
            MaxNotificationsPerPublish=0,
            PublishingEnabled=True,
            Priority=0,
        )
        self._heard_at = time.monotonic()
        self.lost_status = None
        self._subscription = await self._client.create_subscription(
            params, _ChangeHandler(self)
        )
        revised_ms = getattr(
            self._subscription.parameters, "RequestedPublishingInterval", 0.0
        )
        if revised_ms:
            self.publishing_interval_s = max(
                self.publishing_interval_s, revised_ms / 1000
            )
        results = await self._subscription.subscribe_data_change(
            [self._client.get_node(node_id) for node_id in self._node_ids],
            queuesize=1,
            sampling_interval=interval_ms,
        )
        # asyncua returns a status code in place of the handle of each
        # monitored item that the server rejected.
        for node_id, result in zip(self._node_ids, results, strict=True):
            if isinstance(result, ua.StatusCode):
                self.rejected[node_id] = result

    async def delete(self) -> None:
        """Delete the subscription; a server that no longer has it is fine."""
        subscription, self._subscription = self._subscription, None
        if subscription is None:
            return
        with contextlib.suppress(Exception):
            await subscription.delete()

    def store(self, node_id: ua.NodeId, data_value: ua.DataValue) -> None:
        """Keep a notified ``data_value`` as the latest value of ``node_id``.

        Only notifications go here, never polled values, so that
        :meth:`has_every_value` shows whether the first publish arrived.
        """
        now = time.monotonic()
        self.latest[node_id] = (data_value, now)
        self._heard_at = now

    def has_every_value(self) -> bool:
        """Return whether every monitored node has had a notification.

        A server sends the first values with its first publish, which may
        come up to one publishing interval after the subscription was
        created. Nodes whose monitored item was rejected never get one and
        are not waited for.
        """
        return all(
            node_id in self.latest or node_id in self.rejected
            for node_id in self._node_ids
        )

    def mark_status(self, status: ua.StatusCode) -> None:
        """Record a subscription status change; a bad one means it is lost."""
        if not status.is_good():
            self.lost_status = status

    def silent_for_s(self) -> float:
        """Return seconds since the server last published or sent a keep-alive.

        asyncua 2.1 records every publish response, keep-alives included.
        NOTE: with asyncua releases that lack ``last_publish_at`` only data
        changes count, so a subscription whose values never change looks
        silent and is recreated every three intervals.
        """
        heard_at = self._heard_at
        published_at = getattr(self._subscription, "last_publish_at", None)
        if published_at is not None:
            heard_at = max(heard_at, published_at)
        return time.monotonic() - heard_at

    def confirmed_age_s(self, node_id: ua.NodeId) -> float | None:
        """Return how long ago ``node_id``'s value was last known current.

        A keep-alive confirms every unchanged value, so the age is the time
        since the latest notification or keep-alive. None when no value has
        arrived for the node.
        """
        if node_id not in self.latest:
            return None
        return self.silent_for_s()
