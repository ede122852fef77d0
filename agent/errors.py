"""The agent's exception tree.

::

    AgentError
    ├── ConfigError          invalid configuration or device profile
    ├── DriverError          (drivers.errors; registered here as a subclass)
    ├── OutboxError          the durable store cannot be used
    └── UplinkError          integration API delivery
        ├── UplinkAuthError          401: token missing, invalid or revoked
        ├── UplinkRejectedError      400/409/422: the API refused the content
        ├── UplinkRateLimitedError   429: wait ``retry_after_s``
        └── UplinkUnavailableError   5xx or network failure

``drivers`` may not import ``agent``, so ``DriverError`` is defined there and
registered as a virtual subclass: ``except AgentError`` catches it too.
Messages never contain a secret.
"""

from __future__ import annotations

from abc import ABCMeta

from drivers.errors import DriverError


class AgentError(Exception, metaclass=ABCMeta):
    """Root of every error the agent raises on purpose."""


AgentError.register(DriverError)


class ConfigError(AgentError):
    """Invalid configuration; ``problems`` lists every problem found."""

    def __init__(self, message: str, problems: list[str] | None = None) -> None:
        super().__init__(message)
        self.problems = problems or [message]


class OutboxError(AgentError):
    """The outbox database cannot be opened or written."""


class UplinkError(AgentError):
    """Delivery to the integration API failed."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class UplinkAuthError(UplinkError):
    """The API rejected the token (missing, invalid or revoked)."""


class UplinkRejectedError(UplinkError):
    """The API rejected the request content; retrying cannot help."""


class UplinkRateLimitedError(UplinkError):
    """The API asked the client to slow down for ``retry_after_s`` seconds."""

    def __init__(
        self, message: str, *, status: int | None = 429, retry_after_s: float
    ) -> None:
        super().__init__(message, status=status)
        self.retry_after_s = retry_after_s


class UplinkUnavailableError(UplinkError):
    """The API is unreachable or failing (5xx, network error, timeout)."""
