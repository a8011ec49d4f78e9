"""Versioned models in Blob Storage.

Layout of the model container::

    versions/<version>/model.joblib     the fitted pipeline (source of truth)
    versions/<version>/metadata.json    version, created_at, libraries, features,
                                         threshold, metrics, training rows, sha256
    versions/<version>/report/...       evaluation report files
    current.json                        {"version": ..., "history": [older promoted versions, newest
                                         first], "rolled_back": [{"version", "at", "to"}, ...]}
    locks/retrain                       leased while a retrain runs

Complete versions stay, so any of them can be promoted again; only incomplete ones (files
without metadata.json: a publish that died) and never-promoted ones may be deleted
(:meth:`ModelStore.delete_version` refuses the promoted version and the history).
"""
from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import HttpResponseError, ResourceExistsError, ResourceNotFoundError
from azure.storage.blob import ContainerClient

from ..compiled import OnnxScorer
from ..model import (
    LoadedModel,
    load_pipeline,
    pipeline_scorer,
    sign_metadata,
    spec_of,
    verify_artifact,
    verify_bytes,
    verify_metadata,
)

log = logging.getLogger(__name__)

POINTER_BLOB = "current.json"
RETRAIN_LOCK_BLOB = "locks/retrain"
# The shortest finite blob lease, renewed every LEASE_RENEW_SECONDS while the holder works: a
# holder that dies (killed mid-publish) stops renewing, and the lease is free within 15 s.
LEASE_SECONDS = 15
LEASE_RENEW_SECONDS = 5
MAX_POINTER_HISTORY = 50


class LockHeld(RuntimeError):
    """Another process holds the lease."""


def _version_prefix(version: str) -> str:
    if not version or "/" in version or version.startswith("."):
        raise ValueError(f"invalid model version {version!r}")
    return f"versions/{version}/"


class ModelStore:
    """Publish, promote, list and load model versions in one blob container."""

    def __init__(self, container: ContainerClient, signing_key: str = ""):
        self.container = container
        self._signing_key = signing_key

    def ensure_container(self) -> None:
        try:
            self.container.create_container()
        except ResourceExistsError:
            pass

    # --- versions ---------------------------------------------------------------

    def publish(self, version: str, model_bytes: bytes, metadata: dict[str, Any],
                extra_files: dict[str, bytes] | None = None) -> None:
        """Upload a new version: extra files first, the model, and metadata last, so a
        version whose metadata exists is complete."""
        prefix = _version_prefix(version)
        if self._signing_key:
            metadata = sign_metadata(metadata, self._signing_key)
        for name, data in (extra_files or {}).items():
            self.container.upload_blob(prefix + name, data, overwrite=True)
        self.container.upload_blob(prefix + "model.joblib", model_bytes, overwrite=False)
        self.container.upload_blob(prefix + "metadata.json", json.dumps(metadata, indent=2, sort_keys=True),
                                   overwrite=False)

    def download_file(self, version: str, name: str) -> bytes:
        return self.container.download_blob(_version_prefix(version) + name).readall()

    def list_files(self, version: str) -> list[str]:
        prefix = _version_prefix(version)
        return [b.name[len(prefix):] for b in self.container.list_blobs(name_starts_with=prefix)]

    def metadata(self, version: str) -> dict[str, Any]:
        return json.loads(self.download_file(version, "metadata.json"))

    def list_versions(self) -> list[dict[str, Any]]:
        """Metadata of every complete version, oldest first."""
        versions = []
        for blob in self.container.list_blobs(name_starts_with="versions/"):
            if blob.name.endswith("/metadata.json"):
                versions.append(json.loads(self.container.download_blob(blob.name).readall()))
        return sorted(versions, key=lambda m: m["version"])

    def load(self, version: str, compiled: bool = True) -> LoadedModel:
        """Download and verify one version, then load it: its compiled ONNX form when it has
        one (and ``compiled``), else the joblib pipeline.

        Verified first: the metadata's signature (with a signing key), and model.joblib's
        sha256/signature even when the ONNX form is served — a version whose source of
        truth was tampered with is refused as a whole.
        """
        metadata = self.metadata(version)
        verify_metadata(metadata, self._signing_key)
        spec_of(metadata)  # refuse a model whose features this code cannot compute
        explainer = self._explainer(version, metadata)
        onnx = metadata.get("onnx")
        if compiled and onnx:
            verify_artifact(self.download_file(version, "model.joblib"), metadata, self._signing_key)
            data = self._verified_file(version, onnx)
            return LoadedModel(version, metadata, OnnxScorer(data), compiled=True, explainer=explainer)
        return LoadedModel(version, metadata, pipeline_scorer(self.load_pipeline(version, metadata)),
                           explainer=explainer)

    def _verified_file(self, version: str, entry: dict[str, Any]) -> bytes:
        """A file a version's metadata lists with its sha256 (and signature), verified."""
        data = self.download_file(version, entry["file"])
        verify_bytes(data, entry.get("sha256"), entry.get("signature"), self._signing_key,
                     f"model {version} ({entry['file']})")
        return data

    def _explainer(self, version: str, metadata: dict[str, Any]) -> Any:
        """The version's explainer (plain arrays, no pickle), or None for versions without one."""
        entry = metadata.get("explainer")
        if not entry:
            return None
        from ..explain import ForestExplainer

        return ForestExplainer.from_bytes(self._verified_file(version, entry))

    def load_guard(self, version: str) -> Any:
        """The verified guard set frozen with a version (a DataFrame), or None if it has none."""
        from ..usecases.publishing import read_guard

        metadata = self.metadata(version)
        verify_metadata(metadata, self._signing_key)
        entry = metadata.get("guard")
        if not entry:
            return None
        return read_guard(self._verified_file(version, entry))

    def load_pipeline(self, version: str, metadata: dict[str, Any] | None = None) -> Any:
        """The verified, unpickled joblib pipeline of one version (the source of truth)."""
        if metadata is None:
            metadata = self.metadata(version)
            verify_metadata(metadata, self._signing_key)
        return load_pipeline(self.download_file(version, "model.joblib"), metadata, self._signing_key)

    # --- the promoted pointer ---------------------------------------------------------

    def read_pointer(self) -> dict[str, Any] | None:
        try:
            return json.loads(self.container.download_blob(POINTER_BLOB).readall())
        except ResourceNotFoundError:
            return None

    def current_version(self) -> str | None:
        pointer = self.read_pointer()
        return pointer["version"] if pointer else None

    def promote(self, version: str, reason: str = "") -> None:
        """Make ``version`` the one predict serves; the previous one goes on the history."""
        self.metadata(version)  # refuse to point at a version that is not complete

        def change(pointer: dict[str, Any] | None) -> dict[str, Any]:
            history = [pointer["version"], *pointer.get("history", [])] if pointer else []
            return self._pointer(version, reason, [v for v in history if v != version],
                                 [r for r in (pointer or {}).get("rolled_back", []) if r.get("version") != version])

        self._update_pointer(change)

    def rollback(self) -> str:
        """Promote the version that was promoted before the current one, going back along the
        history: A→B→C promoted, rollback serves B, rollback again serves A. The version rolled
        back from is recorded under ``rolled_back`` and not put on the history, so it is never
        rolled back *to*; a later promotion pushes the current version on the history as usual."""
        target: list[str] = []

        def change(pointer: dict[str, Any] | None) -> dict[str, Any]:
            if not pointer or not pointer.get("history"):
                raise ValueError("no earlier promoted version to roll back to")
            current, (previous, *older) = pointer["version"], pointer["history"]
            try:
                self.metadata(previous)
            except ResourceNotFoundError:
                raise ValueError(f"cannot roll back to {previous}: its metadata.json is missing") from None
            now = datetime.now(timezone.utc).isoformat()
            rolled_back = [{"version": current, "at": now, "to": previous}, *pointer.get("rolled_back", [])]
            target[:] = [previous]
            return self._pointer(previous, f"rollback from {current}", older, rolled_back)

        self._update_pointer(change)
        return target[0]

    @staticmethod
    def _pointer(version: str, reason: str, history: list[str], rolled_back: list[dict[str, Any]]) -> dict[str, Any]:
        return {"version": version, "promoted_at": datetime.now(timezone.utc).isoformat(), "reason": reason,
                "history": history[:MAX_POINTER_HISTORY], "rolled_back": rolled_back[:MAX_POINTER_HISTORY]}

    def _update_pointer(self, change: Callable[[dict[str, Any] | None], dict[str, Any]]) -> None:
        """Rewrite the pointer with ``change(current pointer)``, retrying if another process
        changed it meanwhile (ETag condition)."""
        for _ in range(5):
            etag, pointer = self._pointer_with_etag()
            body = json.dumps(change(pointer))
            try:
                if etag:
                    self.container.upload_blob(POINTER_BLOB, body, overwrite=True, etag=etag,
                                               match_condition=MatchConditions.IfNotModified)
                else:
                    self.container.upload_blob(POINTER_BLOB, body, overwrite=False)
                return
            except (ResourceExistsError, ResourceNotFoundError):
                continue  # someone else changed the pointer meanwhile: read it again
            except HttpResponseError as exc:
                if exc.status_code == 412:
                    continue
                raise
        raise RuntimeError("could not update the model pointer: too many concurrent changes")

    # --- versions a killed publish left behind -------------------------------------------

    def incomplete_versions(self, older_than: timedelta) -> list[str]:
        """Versions with files but no metadata.json (a publish that died before its last
        upload) whose newest file is older than ``older_than``: younger ones may still be
        being published."""
        newest: dict[str, datetime] = {}
        complete: set[str] = set()
        for blob in self.container.list_blobs(name_starts_with="versions/"):
            parts = blob.name.split("/", 2)
            if len(parts) < 3:
                continue
            version = parts[1]
            if parts[2] == "metadata.json":
                complete.add(version)
            modified = blob.last_modified
            if version not in newest or modified > newest[version]:
                newest[version] = modified
        cutoff = datetime.now(timezone.utc) - older_than
        return sorted(v for v, modified in newest.items() if v not in complete and modified <= cutoff)

    def delete_version(self, version: str) -> int:
        """Delete every file of ``version``; return how many. Refuses the promoted version and
        any version on the pointer's history (rollback targets). metadata.json goes first, so a
        deletion cut short leaves an incomplete version that :meth:`incomplete_versions` finds."""
        prefix = _version_prefix(version)
        pointer = self.read_pointer() or {}
        if version == pointer.get("version"):
            raise ValueError(f"model {version} is the promoted version: it cannot be deleted")
        if version in pointer.get("history", []):
            raise ValueError(f"model {version} is in the promotion history (a rollback target): not deleted")
        names = [b.name for b in self.container.list_blobs(name_starts_with=prefix)]
        names.sort(key=lambda name: name != prefix + "metadata.json")
        for name in names:
            try:
                self.container.delete_blob(name)
            except ResourceNotFoundError:
                pass
        if names:
            log.info("model %s deleted (%d files)", version, len(names))
        return len(names)

    def _pointer_with_etag(self) -> tuple[str | None, dict[str, Any] | None]:
        try:
            downloader = self.container.download_blob(POINTER_BLOB)
            return downloader.properties.etag, json.loads(downloader.readall())
        except ResourceNotFoundError:
            return None, None

    # --- mutual exclusion ---------------------------------------------------------------

    @contextmanager
    def exclusive(self, lock_blob: str = RETRAIN_LOCK_BLOB) -> Iterator[None]:
        """Hold a blob lease for the duration of the block, renewing it in the background.

        Raises :class:`LockHeld` at once if another process holds it. A holder that dies
        stops renewing, so the lease expires within ``LEASE_SECONDS``.
        """
        blob = self.container.get_blob_client(lock_blob)
        try:
            blob.upload_blob(b"", overwrite=False)
        except ResourceExistsError:
            pass
        try:
            lease = blob.acquire_lease(lease_duration=LEASE_SECONDS)
        except HttpResponseError as exc:
            if exc.status_code == 409:
                raise LockHeld(f"{lock_blob} is leased by another process") from None
            raise
        stop = threading.Event()

        def renew() -> None:
            wait = LEASE_RENEW_SECONDS
            while not stop.wait(wait):
                try:
                    lease.renew()
                    wait = LEASE_RENEW_SECONDS
                except Exception:  # keep trying, sooner: the work must not die because of one renewal
                    log.warning("could not renew the lease on %s", lock_blob, exc_info=True)
                    wait = 1

        renewer = threading.Thread(target=renew, name="lease-renewer", daemon=True)
        renewer.start()
        try:
            yield
        finally:
            stop.set()
            renewer.join(timeout=5)
            try:
                lease.release()
            except Exception:
                log.warning("could not release the lease on %s; it expires in %ss", lock_blob, LEASE_SECONDS)
