"""The compiled serving form of a model: the fitted forest as ONNX, run by onnxruntime.

``model.joblib`` stays the source of truth. At publish time the forest is converted
and its probabilities are compared with the pipeline's on the holdout; the ONNX file is
published only when they agree within ``PARITY_TOLERANCE``. SMOTE only acts while
fitting, so at inference the pipeline is exactly its final forest.
"""
from __future__ import annotations

from typing import Any

import numpy as np

PARITY_TOLERANCE = 1e-5
ONNX_FILE = "model.onnx"
INPUT_NAME = "features"


class CompilationFailed(RuntimeError):
    """The model could not be compiled, or the compiled form disagrees with it."""


def compile_pipeline(pipeline: Any, n_features: int) -> bytes:
    """ONNX bytes of the pipeline's final estimator (probabilities as a plain tensor)."""
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import FloatTensorType

    estimator = pipeline.steps[-1][1] if hasattr(pipeline, "steps") else pipeline
    try:
        model = to_onnx(estimator, initial_types=[(INPUT_NAME, FloatTensorType([None, n_features]))],
                        options={id(estimator): {"zipmap": False}})
    except Exception as exc:  # skl2onnx raises many types for unsupported models
        raise CompilationFailed(f"{type(exc).__name__}: {exc}") from exc
    return model.SerializeToString()


class OnnxScorer:
    """Fraud probabilities from ONNX bytes, single-threaded (one row per request)."""

    def __init__(self, onnx_bytes: bytes):
        import onnxruntime as ort

        options = ort.SessionOptions()
        # Thread pools cost more than they save on one row, and instances scale out instead.
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        self._session = ort.InferenceSession(onnx_bytes, options, providers=["CPUExecutionProvider"])
        self._outputs = [self._session.get_outputs()[1].name]  # [label, probabilities]

    def __call__(self, rows: np.ndarray) -> np.ndarray:
        # The forest compares float32 thresholds, as scikit-learn's trees do internally.
        probabilities = self._session.run(self._outputs, {INPUT_NAME: np.asarray(rows, dtype=np.float32)})[0]
        return probabilities[:, 1]


def parity_gap(pipeline: Any, onnx_bytes: bytes, rows: np.ndarray) -> float:
    """Largest absolute difference between the pipeline's and the ONNX probabilities."""
    expected = pipeline.predict_proba(rows)[:, 1]
    actual = OnnxScorer(onnx_bytes)(rows)
    return float(np.max(np.abs(expected - actual))) if len(rows) else 0.0


def compile_checked(pipeline: Any, rows: np.ndarray, tolerance: float = PARITY_TOLERANCE) -> tuple[bytes, float]:
    """Compile and prove parity on ``rows``; raise CompilationFailed otherwise."""
    onnx_bytes = compile_pipeline(pipeline, rows.shape[1])
    gap = parity_gap(pipeline, onnx_bytes, rows)
    if not gap <= tolerance:
        raise CompilationFailed(f"ONNX probabilities differ by {gap:.2e} (> {tolerance:.0e}) on the holdout")
    return onnx_bytes, gap
