"""The persisting use case: queued scored transactions into the database, idempotently."""
from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import Protocol

from ..redaction import one_line
from ..schema import ScoredTransaction, ValidationError, parse_scored_message
from ..storage.queue import BATCH_KEY
from ..storage.transactions import AddResult

log = logging.getLogger(__name__)

# A poison message can hold thousands of bad items: list a few, count the rest, so one
# message never makes a multi-megabyte log line.
MAX_PROBLEMS_SHOWN = 10
MAX_PROBLEM_CHARS = 160
MAX_SUMMARY_CHARS = 1800  # the host logs it in one line: keep that line under ~2 KB


class MalformedMessage(ValueError):
    """A queue message that can never be persisted (the host retries it, then poisons it)."""


class TransactionSink(Protocol):
    def add_scored(self, batch: Sequence[ScoredTransaction]) -> AddResult: ...


def decode_message(body: bytes) -> tuple[list[ScoredTransaction], list[str]]:
    """The scored transactions in a queue message (one, or a ``transactions`` batch), and
    the problems of the malformed items. Raises MalformedMessage if it is not JSON."""
    try:
        data = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise MalformedMessage(f"not UTF-8 JSON: {one_line(str(exc), MAX_PROBLEM_CHARS)}") from None
    except RecursionError:
        raise MalformedMessage("JSON nested too deeply") from None
    items = data[BATCH_KEY] if isinstance(data, dict) and isinstance(data.get(BATCH_KEY), list) else [data]
    good: list[ScoredTransaction] = []
    problems: list[str] = []
    for index, item in enumerate(items):
        try:
            good.append(parse_scored_message(item))
        except ValidationError as exc:
            problems.append(f"item {index}: {exc}" if len(items) > 1 else str(exc))
    return good, problems


def summarize_problems(problems: list[str], shown: int = MAX_PROBLEMS_SHOWN, limit: int = MAX_SUMMARY_CHARS) -> str:
    """The first ``shown`` problems, each shortened, then "and N more": one bounded line
    however many items of a message are malformed."""
    parts: list[str] = []
    length = 0
    each = max(min(MAX_PROBLEM_CHARS, (limit - 40) // max(shown, 1) - 2), 20)
    for problem in problems[:shown]:
        part = one_line(problem, each)
        if length + len(part) + 2 > limit - 40:  # room for "; and N more"
            break
        parts.append(part)
        length += len(part) + 2
    rest = len(problems) - len(parts)
    return "; ".join(parts + ([f"and {rest} more"] if rest else []))


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
