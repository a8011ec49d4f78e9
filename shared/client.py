"""A small HTTP client for the service: what `simulate --url` and the load scripts use.

A 503 is retried with the same transaction_id (the idempotency key), so a
transaction is scored and stored once however often it is sent.
"""
from __future__ import annotations

import os
import time
from typing import Any

import requests

from .schema import format_timestamp

LABEL_BATCH = 1000


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

    def predict(self, transaction: dict[str, Any], retries: int = 5, backoff: float = 0.5) -> requests.Response:
        """POST one transaction, retrying 503s and connection errors with the same id."""
        for attempt in range(retries + 1):
            try:
                response = self.session.post(f"{self.base_url}/api/predict", json=transaction, timeout=self.timeout)
                if response.status_code != 503 or attempt == retries:
                    return response
            except (requests.ConnectionError, requests.Timeout):
                # Safe to resend: the same transaction_id is scored and stored once.
                if attempt == retries:
                    raise
            time.sleep(backoff * (2 ** attempt))
        raise AssertionError("unreachable")

    def send_labels(self, labels: list[dict[str, Any]]) -> requests.Response:
        response = self.session.post(f"{self.base_url}/api/labels", json={"labels": labels}, timeout=self.timeout)
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


def post_transactions(base_url: str, frame: Any, key: str | None = None) -> dict[str, int]:
    """Send a labeled frame: every transaction to /api/predict, then the labels."""
    client = PredictClient(base_url, key)
    scored = failed = flagged = 0
    labels = []
    for row in frame.itertuples(index=False):
        response = client.predict(transaction_payload(row))
        if response.status_code == 200:
            scored += 1
            flagged += bool(response.json()["is_fraud"])
            labels.append({"transaction_id": row.transaction_id, "is_fraud": bool(row.label)})
        else:
            failed += 1
    for start in range(0, len(labels), LABEL_BATCH):
        client.send_labels(labels[start:start + LABEL_BATCH])
    return {"enqueued": scored, "failed": failed, "flagged": flagged, "labels": len(labels),
            "true_frauds": int(frame["label"].sum())}
