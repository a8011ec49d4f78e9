"""The persisting use case: queued scored transactions into the database, idempotently."""
from __future__ import annotations

import json
import logging
from typing import Protocol, Sequence

from ..schema import ScoredTransaction, ValidationError, parse_scored_message
from ..storage.queue import BATCH_KEY
from ..storage.transactions import AddResult

log = logging.getLogger(__name__)

# A poison message can hold thousands of bad items: list a few, count the rest, so one
# message never makes a multi-megabyte log line.
MAX_PROBLEMS_LISTED = 10
MAX_PROBLEM_CHARS = 200


class MalformedMessage(ValueError):
    """A queue message that can never be persisted (the host retries it, then poisons it)."""


class TransactionSink(Protocol):
    def add_scored(self, batch: Sequence[ScoredTransaction]) -> AddResult: ...


def decode_message(body: bytes) -> tuple[list[ScoredTransaction], list[str]]:
    """The scored transactions in a queue message (one, or a ``transactions`` batch), and
    the problems of the malformed items. Raises MalformedMessage if it is not JSON."""
    try:
        data = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise MalformedMessage(f"not UTF-8 JSON: {str(exc)[:MAX_PROBLEM_CHARS]}") from None
    items = data[BATCH_KEY] if isinstance(data, dict) and isinstance(data.get(BATCH_KEY), list) else [data]
    good: list[ScoredTransaction] = []
    problems: list[str] = []
    for index, item in enumerate(items):
        try:
            good.append(parse_scored_message(item))
        except ValidationError as exc:
            problems.append(f"item {index}: {exc}" if len(items) > 1 else str(exc))
    return good, problems


def summarize_problems(problems: list[str]) -> str:
    """At most MAX_PROBLEMS_LISTED problems, each cut short, and how many more there were."""
    shown = [p if len(p) <= MAX_PROBLEM_CHARS else p[:MAX_PROBLEM_CHARS] + "…" for p in problems[:MAX_PROBLEMS_LISTED]]
    more = len(problems) - len(shown)
    return "; ".join(shown) + (f"; and {more} more" if more else "")


class Persisting:
    """Stores what predict queued."""

    def __init__(self, transactions: TransactionSink):
        self.transactions = transactions

    def persist(self, body: bytes) -> int:
        """Insert the queued transactions; return how many were new (0 for a redelivery).

        Valid items are stored even when others are malformed; then MalformedMessage is
        raised so the host retries and finally moves the message to the poison queue, where
        the bad items can be inspected (the stored ones are not inserted twice on retry).
        Database errors propagate for the same retry-then-poison path.
        """
        scored, problems = decode_message(body)
        result = self.transactions.add_scored(scored)
        if result.inserted < len(scored):
            log.info("%d of %d transactions already stored: redelivery ignored", len(scored) - result.inserted,
                     len(scored))
        if problems:
            raise MalformedMessage(summarize_problems(problems))
        return result.inserted
