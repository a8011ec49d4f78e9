"""Artifacts are verified before they are unpickled."""
import numpy as np
import pytest
from sklearn.dummy import DummyClassifier

from shared.model import ArtifactRejected, load_pipeline, serialize_pipeline, sha256_hex, signature, verify_artifact


@pytest.fixture
def artifact():
    model = DummyClassifier(strategy="prior").fit(np.zeros((4, 1)), [0, 0, 0, 1])
    data = serialize_pipeline(model)
    return data, {"version": "v1", "sha256": sha256_hex(data)}


def test_good_artifact_loads(artifact):
    data, metadata = artifact
    assert load_pipeline(data, metadata).predict_proba(np.zeros((1, 1)))[0, 1] == pytest.approx(0.25)


def test_truncated_or_tampered_artifact_is_refused(artifact):
    data, metadata = artifact
    with pytest.raises(ArtifactRejected, match="sha256"):
        load_pipeline(data[:-10], metadata)
    tampered = bytearray(data)
    tampered[len(tampered) // 2] ^= 0xFF
    with pytest.raises(ArtifactRejected):
        load_pipeline(bytes(tampered), metadata)
    with pytest.raises(ArtifactRejected, match="no sha256"):
        verify_artifact(data, {"version": "v1"})


def test_signature_required_and_checked_when_key_set(artifact):
    data, metadata = artifact
    with pytest.raises(ArtifactRejected, match="unsigned"):
        verify_artifact(data, metadata, signing_key="k1")
    signed = {**metadata, "signature": signature(data, "k1")}
    verify_artifact(data, signed, signing_key="k1")
    with pytest.raises(ArtifactRejected, match="signature"):
        verify_artifact(data, signed, signing_key="other")
    # A re-hashed forgery without the key is still refused.
    forged = data + b"x"
    with pytest.raises(ArtifactRejected, match="signature"):
        verify_artifact(forged, {"version": "v1", "sha256": sha256_hex(forged), "signature": signed["signature"]},
                        signing_key="k1")
