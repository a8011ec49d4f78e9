"""Population stability index (PSI): is live traffic still like what a model was judged on?

At publish, each version stores a *reference* in its metadata: for the score and every
feature, the bin edges and the share of rows in each bin, computed on the version's
out-of-time holdout with the sampling weights (a sampled genuine row stands for
``weight`` rows of the population). Live values are binned with the same edges and

    PSI = Σ (live_i − reference_i) · ln(live_i / reference_i)

over the bins (shares floored at ``EPSILON`` so an empty bin is finite). Conventional
reading: below 0.1 stable, 0.1–0.25 a moderate shift, 0.25 and above a major shift.

Bins: up to ``BINS`` weighted quantile bins, right-closed (``x <= edge``); a value with
at most ``BINS`` distinct values (flags, small counts) gets one bin per value. Pure numpy:
predict's process never imports this module, the console and the retrain timer do.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

BINS = 10
EPSILON = 1e-4
METHOD = f"psi/weighted-quantile-{BINS}"
# Conventional PSI bands, for labels on the console.
STABLE_BELOW = 0.1
MAJOR_FROM = 0.25


def _clean(values: Any, weights: Any | None = None) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(values, dtype=np.float64).ravel()
    w = np.ones_like(x) if weights is None else np.asarray(weights, dtype=np.float64).ravel()
    keep = np.isfinite(x) & np.isfinite(w) & (w > 0)
    return x[keep], w[keep]


def bin_edges(values: Any, weights: Any | None = None, bins: int = BINS) -> list[float]:
    """Interior edges of up to ``bins`` right-closed bins holding about equal weight."""
    x, w = _clean(values, weights)
    if x.size == 0:
        return []
    distinct = np.unique(x)
    if distinct.size <= bins:
        return [float(v) for v in distinct[:-1]]
    order = np.argsort(x, kind="stable")
    x, w = x[order], w[order]
    cumulative = np.cumsum(w) / w.sum()
    picks = np.searchsorted(cumulative, np.arange(1, bins) / bins, side="left")
    edges = np.unique(x[np.minimum(picks, x.size - 1)])
    # The largest value closes the last bin: an edge there would leave an empty bin above it.
    return [float(e) for e in edges if e < x[-1]]


def shares(values: Any, edges: list[float], weights: Any | None = None) -> list[float]:
    """The (weighted) share of values in each bin of ``edges``; all zero without values."""
    x, w = _clean(values, weights)
    counts = np.bincount(np.searchsorted(np.asarray(edges, dtype=np.float64), x, side="left"), weights=w,
                         minlength=len(edges) + 1)
    total = counts.sum()
    return [float(c / total) if total > 0 else 0.0 for c in counts]


def psi(reference: list[float], live: list[float]) -> float:
    p = np.maximum(np.asarray(reference, dtype=np.float64), EPSILON)
    q = np.maximum(np.asarray(live, dtype=np.float64), EPSILON)
    return float(np.sum((q - p) * np.log(q / p)))


def describe(value: float | None) -> str:
    if value is None or not math.isfinite(value):
        return "unknown"
    if value < STABLE_BELOW:
        return "stable"
    return "moderate" if value < MAJOR_FROM else "major"


def build_reference(features: Mapping[str, Any], scores: Any, weights: Any, source: str) -> dict[str, Any]:
    """The reference a version is published with: edges and shares of the score and each feature."""

    def entry(values: Any) -> dict[str, Any]:
        edges = bin_edges(values, weights)
        return {"edges": edges, "shares": shares(values, edges, weights)}

    x, w = _clean(scores, weights)
    return {"method": METHOD, "source": source, "rows": int(x.size), "weighted_rows": float(w.sum()),
            "score": entry(scores), "features": {name: entry(values) for name, values in features.items()}}


def compare(reference: Mapping[str, Any], features: Mapping[str, Any], scores: Any | None,
            min_rows: int) -> dict[str, Any]:
    """PSI of live ``features`` (name → values) and ``scores`` against a version's reference.
    A part with fewer than ``min_rows`` live values gets no PSI (``psi: None``) and says why."""

    def one(name: str, ref: Mapping[str, Any], values: Any) -> dict[str, Any]:
        x, _ = _clean(values)
        live = shares(x, list(ref["edges"]), None)
        value = psi(ref["shares"], live) if x.size >= min_rows else None
        return {"name": name, "psi": value, "level": describe(value), "rows": int(x.size),
                "edges": list(ref["edges"]), "reference": list(ref["shares"]), "live": live}

    parts = [one(name, ref, features[name]) for name, ref in reference.get("features", {}).items()
             if name in features]
    parts.sort(key=lambda part: -1.0 if part["psi"] is None else part["psi"], reverse=True)
    score = one("score", reference["score"], scores) if scores is not None and "score" in reference else None
    # The largest shift, of the score or of any feature, is what a retrain is triggered on.
    measured = [p for p in [*parts, *([score] if score else [])] if p["psi"] is not None]
    top = max(measured, key=lambda p: p["psi"]) if measured else None
    return {"method": reference.get("method", METHOD), "features": parts, "score": score,
            "max_psi": top["psi"] if top else None, "max_feature": top["name"] if top else None,
            "level": describe(top["psi"] if top else None)}
