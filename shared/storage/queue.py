"""The transactions queue: scored transactions on their way to the database."""
from __future__ import annotations

import json
from typing import Any

from azure.core.exceptions import ResourceExistsError
from azure.storage.queue import QueueClient


class EnqueueFailed(RuntimeError):
    """The message was not accepted by the queue service."""


class TransactionQueue:
    """Sends JSON messages that the Functions queue trigger decodes with default settings."""

    def __init__(self, client: QueueClient):
        self.client = client

    def ensure_exists(self) -> None:
        try:
            self.client.create_queue()
        except ResourceExistsError:
            pass

    def send(self, message: dict[str, Any]) -> str:
        """Enqueue one message; return its id. Raises :class:`EnqueueFailed` on any failure."""
        try:
            return self.client.send_message(json.dumps(message, separators=(",", ":"))).id
        except Exception as exc:  # any transport or service error means "not enqueued"
            raise EnqueueFailed(f"queue {self.client.queue_name}: {type(exc).__name__}") from exc
