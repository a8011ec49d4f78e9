"""Versioned models in Blob Storage.

Layout of the model container::

    versions/<version>/model.joblib     the fitted pipeline (source of truth)
    versions/<version>/metadata.json    version, created_at, libraries, features,
                                         threshold, metrics, training rows, sha256
    versions/<version>/report/...       evaluation report files
    current.json                        {"version": ..., "history": [older promoted versions]}
    locks/retrain                       leased while a retrain runs

Versions are never deleted, so any of them can be promoted again (rollback).
"""
from __future__ import annotations

import json
import logging
import threading
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Any, Iterator

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
LEASE_SECONDS = 60  # the longest finite blob lease; renewed while the holder works


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
        for _ in range(5):
            etag, pointer = self._pointer_with_etag()
            history = []
            if pointer:
                history = [pointer["version"], *pointer.get("history", [])][:50]
            body = json.dumps({
                "version": version,
                "promoted_at": datetime.now(timezone.utc).isoformat(),
                "reason": reason,
                "history": [v for v in history if v != version],
            })
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

    def rollback(self) -> str:
        """Promote the version that was promoted before the current one."""
        pointer = self.read_pointer()
        if not pointer or not pointer.get("history"):
            raise ValueError("no earlier promoted version to roll back to")
        previous = pointer["history"][0]
        self.promote(previous, reason=f"rollback from {pointer['version']}")
        return previous

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
            while not stop.wait(LEASE_SECONDS / 3):
                try:
                    lease.renew()
                except Exception:  # keep trying: the work must not die because of one renewal
                    log.warning("could not renew the lease on %s", lock_blob, exc_info=True)

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
