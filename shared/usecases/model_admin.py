"""Operator actions on the served model: promote a version, roll back along the history.

As ``python -m shared.cli models promote`` does, a version is loaded (and so verified:
sha256, signature, feature spec, ONNX form) before it is promoted, and so is the version a
rollback returns to: the console can never point predict at a model predict would refuse.
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any, Protocol

from ..errors import Conflict
from ..model import ArtifactRejected
from ..schema import FieldError, ValidationError

log = logging.getLogger(__name__)

VERSION_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$(?!\n)")


class Models(Protocol):
    def read_pointer(self) -> dict[str, Any] | None: ...
    def metadata(self, version: str) -> dict[str, Any]: ...
    def load(self, version: str, compiled: bool = ...) -> Any: ...
    def promote(self, version: str, reason: str = "") -> None: ...
    def rollback(self) -> str: ...


@dataclass(frozen=True)
class Change:
    version: str  # now promoted
    previous: str | None  # promoted before


def validate_version(data: Any) -> str:
    """The ``version`` of a ``{"version": "..."}`` body (nothing else allowed)."""
    if not isinstance(data, dict):
        raise ValidationError([FieldError("body", "must be a JSON object")])
    errors = [FieldError(name[:64], "unknown field") for name in data if name != "version"]
    version = data.get("version")
    if not isinstance(version, str) or not VERSION_PATTERN.fullmatch(version):
        errors.append(FieldError("version", "must be a model version: 1-64 characters of A-Z a-z 0-9 . _ - "
                                            "starting with a letter or digit"))
    if errors:
        raise ValidationError(errors)
    return str(version)


def validate_empty(data: Any) -> None:
    """A body that must be ``{}`` (the rollback's: it names no version, it goes back one)."""
    if not isinstance(data, dict):
        raise ValidationError([FieldError("body", "must be a JSON object")])
    if data:
        raise ValidationError([FieldError(name[:64], "unknown field") for name in data])


def not_found(version: str) -> ValidationError:
    return ValidationError([FieldError("version", f"no complete model version {version!r}")], status=404,
                           message="not found")


class ModelAdmin:
    def __init__(self, store: Models):
        self.store = store

    def _verified(self, version: str) -> None:
        from azure.core.exceptions import ResourceNotFoundError

        try:
            self.store.load(version)
        except ResourceNotFoundError:
            raise not_found(version) from None
        except ArtifactRejected as exc:
            log.error("console: model %s not promoted, it fails verification: %s", version, exc)
            raise Conflict(f"model {version} fails verification and cannot be served: {exc}", ["version"]) from None

    def promote(self, version: str, key_id: str) -> Change:
        previous = (self.store.read_pointer() or {}).get("version")
        self._verified(version)
        self.store.promote(version, reason=f"promoted from the console (key {key_id})")
        log.warning("console: model %s promoted (was %s) by key %s", version, previous, key_id)
        return Change(version, previous)

    def rollback(self, key_id: str) -> Change:
        pointer = self.store.read_pointer() or {}
        history = pointer.get("history") or []
        if not history:
            raise Conflict("there is no earlier promoted version to roll back to", [])
        self._verified(history[0])
        try:
            target = self.store.rollback()
        except ValueError as exc:
            raise Conflict(str(exc), []) from None
        log.warning("console: rolled back from %s to %s by key %s", pointer.get("version"), target, key_id)
        return Change(target, pointer.get("version"))
