"""The compiled (ONNX) serving form must give the pipeline's probabilities."""
import numpy as np
import pytest

from shared.compiled import CompilationFailed, OnnxScorer, compile_checked, parity_gap
from shared.training import TrainingParams, fit_pipeline


@pytest.fixture(scope="module")
def pipeline_and_rows():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(3000, 6)) * [1, 10, 100, 0.01, 5, 1]
    y = ((X[:, 0] + X[:, 1] / 10 + rng.normal(size=3000)) > 2.5).astype(int)
    return fit_pipeline(X, y, TrainingParams(n_estimators=30, max_depth=10, n_jobs=1)), X


def test_onnx_matches_the_pipeline(pipeline_and_rows):
    pipeline, X = pipeline_and_rows
    onnx_bytes, gap = compile_checked(pipeline, X)
    assert gap <= 1e-5
    scores = OnnxScorer(onnx_bytes)(X[:50])
    np.testing.assert_allclose(scores, pipeline.predict_proba(X[:50])[:, 1], atol=1e-5)
    assert scores.shape == (50,)


def test_refused_when_it_does_not_match(pipeline_and_rows):
    pipeline, X = pipeline_and_rows
    with pytest.raises(CompilationFailed, match="differ"):
        compile_checked(pipeline, X, tolerance=-1.0)


def test_a_different_model_is_detected(pipeline_and_rows):
    pipeline, X = pipeline_and_rows
    other = fit_pipeline(X, (X[:, 2] > 0).astype(int), TrainingParams(n_estimators=5, n_jobs=1))
    onnx_bytes, _ = compile_checked(other, X)
    assert parity_gap(pipeline, onnx_bytes, X) > 0.1
