"""A small HTTP client for the service: what `simulate --url` and the load scripts use.

A 503 is retried with the same transaction_id (the idempotency key), so a
transaction is scored and stored once however often it is sent.
"""
from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from typing import Any

import requests

from .schema import format_timestamp

LABEL_BATCH = 1000


def retry_after_seconds(value: str | None) -> float | None:
    """A ``Retry-After`` header in seconds (delta-seconds or an HTTP date); None if absent or unreadable."""
    if not value:
        return None
    try:
        seconds = float(value)
        return None if math.isnan(seconds) else seconds
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return (when - datetime.now(timezone.utc)).total_seconds()


class PredictClient:
    """POSTs transactions and labels to a running service."""

    def __init__(self, base_url: str, key: str | None = None, timeout: float = 10.0,
                 session: requests.Session | None = None):
        self.base_url = base_url.rstrip("/")
        self.session = session or requests.Session()
        key = key or os.environ.get("FUNCTION_KEY")
        if key:
            self.session.headers["x-functions-key"] = key
        self.timeout = timeout

    def predict(self, transaction: dict[str, Any], retries: int = 5, backoff: float = 0.5,
                max_wait: float = 30.0) -> requests.Response:
        """POST one transaction, retrying 503s, connection errors and timeouts with the same id.

        After a 503 it waits what ``Retry-After`` asks (seconds or an HTTP date), else
        ``backoff × 2^attempt``; never more than ``max_wait`` seconds per wait. The last
        answer is returned (a 503 too) once ``retries`` are used up; the last connection
        error or timeout is raised.
        """
        for attempt in range(retries + 1):
            try:
                response = self.session.post(f"{self.base_url}/api/predict", json=transaction, timeout=self.timeout)
                if response.status_code != 503 or attempt == retries:
                    return response
                delay = retry_after_seconds(response.headers.get("Retry-After"))
            except (requests.ConnectionError, requests.Timeout):
                # Safe to resend: the same transaction_id is scored and stored once.
                if attempt == retries:
                    raise
                delay = None
            if delay is None:
                delay = backoff * (2 ** attempt)
            time.sleep(min(max(delay, 0.0), max_wait))
        raise AssertionError("unreachable")

    def send_labels(self, labels: list[dict[str, Any]], source: str | None = None) -> requests.Response:
        body: dict[str, Any] = {"labels": labels}
        if source is not None:
            body["source"] = source
        response = self.session.post(f"{self.base_url}/api/labels", json=body, timeout=self.timeout)
        response.raise_for_status()
        return response


def transaction_payload(row: Any) -> dict[str, Any]:
    return {
        "transaction_id": row.transaction_id,
        "timestamp": format_timestamp(row.timestamp.to_pydatetime()),
        "customer_id": row.customer_id,
        "terminal_id": row.terminal_id,
        "amount": float(row.amount),
    }


def post_transactions(base_url: str, frame: Any, key: str | None = None,
                      before_send: Callable[[Any], None] | None = None,
                      on_sent: Callable[[int], None] | None = None) -> list[dict[str, Any] | None]:
    """POST every transaction of ``frame`` to /api/predict, in order (503s and lost
    connections retried with the same id); the answers' bodies, None where it was not scored
    (a service still unreachable after the retries raises).
    ``before_send(row)`` runs before each one, ``on_sent(1)`` after it."""
    client = PredictClient(base_url, key)
    answers: list[dict[str, Any] | None] = []
    for row in frame.itertuples(index=False):
        if before_send is not None:
            before_send(row)
        response = client.predict(transaction_payload(row))  # unreachable after its retries: raises
        answers.append(response.json() if response.status_code == 200 else None)
        if on_sent is not None:
            on_sent(1)
    return answers


def post_labels(base_url: str, labels: list[dict[str, Any]], key: str | None = None,
                source: str | None = None) -> int:
    """POST labels (``{"transaction_id", "is_fraud"}``) to /api/labels in batches; how many were sent."""
    client = PredictClient(base_url, key)
    for start in range(0, len(labels), LABEL_BATCH):
        client.send_labels(labels[start:start + LABEL_BATCH], source=source)
    return len(labels)
