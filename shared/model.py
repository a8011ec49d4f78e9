"""The model artifact: serialisation, integrity checks, and the in-process scorer.

A version is a joblib pickle of the fitted pipeline plus ``metadata.json``. Pickles
run code when loaded, so bytes are verified before ``joblib.load`` ever sees them:
their SHA-256 must match the metadata, and when ``MODEL_SIGNING_KEY`` is set an
HMAC-SHA256 signature made with that key must match too.
"""
from __future__ import annotations

import functools
import hashlib
import hmac
import io
import json
import platform
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from .decisions import Bands
    from .explain import ForestExplainer
    from .features import FeatureSpec


class ArtifactRejected(RuntimeError):
    """A model artifact failed verification and was not loaded."""


def new_version(now: datetime | None = None) -> str:
    """A sortable, unique version name such as ``20261123T221500Z-3fa9c1``."""
    now = now or datetime.now(timezone.utc)
    return f"{now.astimezone(timezone.utc):%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"


def library_versions() -> dict[str, str]:
    import imblearn
    import joblib
    import sklearn

    return {
        "python": platform.python_version(),
        "scikit-learn": sklearn.__version__,
        "imbalanced-learn": imblearn.__version__,
        "numpy": np.__version__,
        "joblib": joblib.__version__,
    }


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def signature(data: bytes, key: str) -> str:
    return hmac.new(key.encode("utf-8"), data, hashlib.sha256).hexdigest()


def serialize_pipeline(pipeline: Any) -> bytes:
    import joblib

    buffer = io.BytesIO()
    joblib.dump(pipeline, buffer, compress=3)
    return buffer.getvalue()


def verify_bytes(data: bytes, sha256: str | None, signed: str | None, signing_key: str, what: str,
                 check_hash: bool = True) -> None:
    """Raise :class:`ArtifactRejected` unless ``data`` hashes (and, with a key, signs) as published."""
    if check_hash:
        if not sha256:
            raise ArtifactRejected(f"{what}: metadata has no sha256")
        actual = sha256_hex(data)
        if not hmac.compare_digest(actual, sha256):
            raise ArtifactRejected(f"{what}: sha256 mismatch (got {actual[:12]}…, published {sha256[:12]}…)")
    if signing_key:
        if not signed:
            raise ArtifactRejected(f"{what}: unsigned, and MODEL_SIGNING_KEY is set")
        if not hmac.compare_digest(signature(data, signing_key), signed):
            raise ArtifactRejected(f"{what}: signature does not match MODEL_SIGNING_KEY")


METADATA_SIGNATURE = "metadata_signature"


def canonical_json(metadata: dict[str, Any]) -> bytes:
    """The bytes a metadata signature covers: everything but the signature itself."""
    unsigned = {k: v for k, v in metadata.items() if k != METADATA_SIGNATURE}
    return json.dumps(unsigned, sort_keys=True, separators=(",", ":")).encode("utf-8")


def sign_metadata(metadata: dict[str, Any], signing_key: str) -> dict[str, Any]:
    """Metadata with an HMAC over its canonical JSON (threshold, features, hashes...)."""
    return {**metadata, METADATA_SIGNATURE: signature(canonical_json(metadata), signing_key)}


def verify_metadata(metadata: dict[str, Any], signing_key: str) -> None:
    """With a signing key, refuse metadata that was rewritten after publication."""
    if signing_key:
        verify_bytes(canonical_json(metadata), "-", metadata.get(METADATA_SIGNATURE), signing_key,
                     f"model {metadata.get('version')} (metadata.json)", check_hash=False)


def verify_artifact(data: bytes, metadata: dict[str, Any], signing_key: str = "") -> None:
    """Verify ``model.joblib`` bytes against their version's metadata."""
    verify_bytes(data, metadata.get("sha256"), metadata.get("signature"), signing_key,
                 f"model {metadata.get('version')}")


def load_pipeline(data: bytes, metadata: dict[str, Any], signing_key: str = "") -> Any:
    """Verify, then unpickle a published pipeline."""
    import joblib

    verify_artifact(data, metadata, signing_key)
    pipeline = joblib.load(io.BytesIO(data))
    # One row per call: a thread pool per predict_proba costs milliseconds for nothing.
    for _, step in getattr(pipeline, "steps", []):
        if hasattr(step, "n_jobs"):
            step.n_jobs = 1
    return pipeline


@dataclass
class LoadedModel:
    """A verified model ready to score: a scoring function and what it was published with.

    ``score_rows`` is the compiled ONNX form when the version has one, else the pipeline.
    """

    version: str
    metadata: dict[str, Any]
    score_rows: Callable[[np.ndarray], np.ndarray]  # 2-D rows in ``features`` order → probabilities
    compiled: bool = False
    explainer: ForestExplainer | None = None  # per-decision reasons (exact tree-path contributions)

    @property
    def features(self) -> list[str]:
        return list(self.metadata["features"])

    @functools.cached_property  # the metadata of a loaded version never changes
    def spec(self) -> FeatureSpec:
        """The feature definitions this model was trained with (serving computes exactly these)."""
        return spec_of(self.metadata)

    @property
    def threshold(self) -> float:
        return float(self.metadata["threshold"])

    def bands(self, policy: str = "cost") -> Bands:
        """The decision thresholds: by cost (approve / review / decline) when the version has
        them and ``policy`` is "cost", else one cut at ``threshold`` (THRESHOLD_RULE)."""
        from .decisions import Bands

        if policy == "cost" and self.metadata.get("bands"):
            return Bands.from_dict(self.metadata["bands"])
        return Bands(self.threshold, self.threshold)

    def score(self, features: dict[str, float]) -> float:
        row = np.array([[features[name] for name in self.metadata["features"]]], dtype=np.float64)
        return float(self.score_rows(row)[0])


def spec_of(metadata: dict[str, Any]) -> FeatureSpec:
    """A version's feature spec, checked against its feature list; ArtifactRejected when this
    code cannot compute the features the model needs."""
    from .features import FeatureSpec

    try:
        spec = FeatureSpec.from_dict(metadata.get("feature_spec") or {})
    except (TypeError, ValueError) as exc:
        raise ArtifactRejected(f"model {metadata.get('version')}: {exc}") from None
    if spec.names != list(metadata.get("features", [])):
        raise ArtifactRejected(f"model {metadata.get('version')}: its features {metadata.get('features')} are not "
                               f"what its feature spec computes ({spec.names})")
    return spec


def pipeline_scorer(pipeline: Any) -> Callable[[np.ndarray], np.ndarray]:
    return lambda rows: pipeline.predict_proba(rows)[:, 1]
