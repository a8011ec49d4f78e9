"""The labeling use case: true outcomes from label sources, which only those sources' keys
may send (the labels function has its own keys, apart from predict's)."""
from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from ..errors import StoreUnavailable
from ..schema import Label, LabelBatch

log = logging.getLogger(__name__)


class LabelSink(Protocol):
    def record(self, batch: Sequence[Label], source: str, key_id: str) -> int: ...


@dataclass(frozen=True)
class LabelResult:
    received: int
    stored: int


class Labeling:
    """Records labels with who sent them. A label for a transaction not persisted yet is
    kept and joins it once the transaction arrives (or expires if it never does)."""

    def __init__(self, labels: LabelSink):
        self.labels = labels

    def record(self, batch: LabelBatch, key_id: str) -> LabelResult:
        from sqlalchemy.exc import SQLAlchemyError

        try:
            stored = self.labels.record(batch.labels, source=batch.source, key_id=key_id)
        except SQLAlchemyError as exc:
            log.error("labels not stored: database error %s", type(getattr(exc, "orig", None) or exc).__name__)
            raise StoreUnavailable("the labels could not be stored; retry the same batch") from None
        return LabelResult(received=len(batch.labels), stored=stored)
