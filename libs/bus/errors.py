"""Errors of the bus, each with a message an operator can act on."""

from __future__ import annotations


class BusError(RuntimeError):
    """The bus cannot do what was asked (unreachable server, bad URL, oversized payload...)."""


class PayloadTooLarge(BusError):
    def __init__(self, subject: str, size: int, limit: int) -> None:
        super().__init__(f"message for {subject} is {size} bytes, over the server's limit of {limit} bytes")
        self.size = size
        self.limit = limit


class RetryableError(Exception):
    """Raised by a handler when the same event may succeed later (the API server is down, a lock is held)."""


class PermanentError(Exception):
    """Raised by a handler when retrying cannot help; the event goes straight to the dead-letter stream."""


class CommandError(Exception):
    """A command failed as a whole; travels to the caller as a ``nats.micro`` error code and description."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    def __str__(self) -> str:
        return f"{self.message} (code {self.code})"


class ServiceUnavailable(CommandError):
    """No service answers on the subject (not running, or not on that node)."""

    def __init__(self, message: str) -> None:
        super().__init__(503, message)


class ServiceTimeout(CommandError):
    def __init__(self, message: str) -> None:
        super().__init__(504, message)
