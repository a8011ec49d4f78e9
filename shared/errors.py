"""What the use cases raise; the HTTP adapters map these (and only these) to answers."""
from __future__ import annotations


class ServiceError(Exception):
    """A request the service could not carry out; ``status`` is its HTTP status."""

    status = 500


class Unavailable(ServiceError):
    """A temporary condition: retry later (with the same transaction_id)."""

    status = 503

    def __init__(self, message: str, retry_after_seconds: int = 5):
        super().__init__(message)
        self.retry_after_seconds = retry_after_seconds


class ModelUnavailable(Unavailable):
    """No model has been published and promoted yet (or none could be loaded)."""

    def __init__(self, message: str):
        super().__init__(message, retry_after_seconds=30)


class EnqueueFailed(Unavailable):
    """The queue did not accept the message (in time)."""


class StoreUnavailable(Unavailable):
    """The database could not be reached or did not answer in time."""


class Conflict(ServiceError):
    """The request contradicts what is stored, e.g. a transaction_id replayed with other content."""

    status = 409

    def __init__(self, message: str, fields: list[str]):
        super().__init__(message)
        self.fields = fields
