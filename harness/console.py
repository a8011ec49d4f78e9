"""A stored history that looks like a running service, for the console's tests, screenshot and
benchmark: simulated traffic ending now, scored by a published model (score, decision, bands,
reasons for reviews and declines), persisted with its feature buckets, and the older part
labeled, as chargebacks and investigations would have labeled it.

Built in bulk (vectorised features and scores, rows inserted through the transaction store in
chunks), so a few hundred thousand rows take seconds to tens of seconds, not a predict call each.
"""
from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import numpy as np
import pandas as pd

from shared.features import compute_features
from shared.model import LoadedModel
from shared.schema import Label
from shared.simulator import simulate_for_volume
from shared.storage.engines import utcnow
from shared.storage.transactions import transaction_row

CHUNK_ROWS = 20_000


@dataclass
class StoredTraffic:
    rows: int
    labeled: int
    reviews: int
    declines: int
    first: datetime
    last: datetime


def traffic(rows: int, days: int, seed: int, prefix: str, end: datetime | None = None) -> pd.DataFrame:
    """``rows`` simulated transactions over ``days`` days, the newest a minute before ``end`` (now)."""
    end = end or datetime.now(timezone.utc)
    start = (end - timedelta(days=days)).date().isoformat()
    frame = simulate_for_volume(rows, seed=seed, n_days=days + 1, start_date=start)
    frame = frame.iloc[:rows].copy()
    shift = frame["timestamp"].max() - (pd.Timestamp(end) - pd.Timedelta(minutes=1))
    frame["timestamp"] = frame["timestamp"] - shift
    frame["transaction_id"] = [f"{prefix}{n:07d}" for n in range(len(frame))]
    return frame.reset_index(drop=True)


def store_scored(wiring: Any, frame: pd.DataFrame, model: LoadedModel, label_before: timedelta | None = None,
                 genuine_label_share: float = 0.3, degraded_share: float = 0.002, review_from: float | None = None,
                 on_chunk: Callable[[int], None] | None = None) -> StoredTraffic:
    """Score ``frame`` with ``model`` as predict would have (features over the frame itself) and
    store it with its decisions; label the transactions older than ``label_before``: every fraud
    and ``genuine_label_share`` of the genuine ones (source ``simulator``)."""
    features = compute_features(frame, model.spec)
    scores = model.score_rows(features[model.features].to_numpy(np.float64))
    bands = model.bands("cost")
    if review_from is not None:
        bands = dataclasses.replace(bands, review_threshold=min(review_from, bands.decline_threshold))
    decisions = np.where(scores >= bands.decline_threshold, "decline",
                         np.where(scores >= bands.review_threshold, "review", "approve"))
    rng = np.random.default_rng(len(frame))
    degraded = rng.random(len(frame)) < degraded_share
    timestamps = pd.to_datetime(frame["timestamp"], utc=True).dt.tz_localize(None).dt.to_pydatetime()
    persisted_at = utcnow()
    values = features.to_numpy(np.float64)
    # Stand-in reasons: the two features furthest above their mean, in standard deviations.
    top = np.asarray(features.columns)[np.argsort(-(values - values.mean(axis=0)) / (values.std(axis=0) + 1e-9),
                                                  axis=1)]
    review_threshold = None if np.isinf(bands.review_threshold) else float(bands.review_threshold)
    decline_threshold = None if np.isinf(bands.decline_threshold) else float(bands.decline_threshold)
    rows = []
    for i, row in enumerate(frame.itertuples(index=False)):
        reasons = None
        if decisions[i] != "approve":
            reasons = json.dumps([{"feature": str(name), "value": float(values[i, features.columns.get_loc(name)]),
                                   "contribution": 0.0, "direction": "raises", "text": f"{name} is high"}
                                  for name in top[i][:2]])
        rows.append(transaction_row(
            row.transaction_id, timestamps[i], row.customer_id, row.terminal_id, float(row.amount), persisted_at,
            fraud_probability=float(scores[i]), predicted_fraud=bool(decisions[i] == "decline"),
            model_version=model.version, scored_at=timestamps[i], degraded=bool(degraded[i]),
            decision=str(decisions[i]), review_threshold=review_threshold, decline_threshold=decline_threshold,
            reasons=reasons))
    for start in range(0, len(rows), CHUNK_ROWS):
        part = rows[start:start + CHUNK_ROWS]
        wiring.transactions.add_rows(part)
        if on_chunk is not None:
            on_chunk(len(part))
    labeled = 0
    if label_before is not None:
        cutoff = pd.Timestamp(datetime.now(timezone.utc) - label_before)
        when = pd.to_datetime(frame["timestamp"], utc=True)
        fraud = frame["label"].to_numpy() == 1
        chosen = (when < cutoff).to_numpy() & (fraud | (rng.random(len(frame)) < genuine_label_share))
        batch = [Label(str(t), bool(f)) for t, f in zip(frame["transaction_id"][chosen], fraud[chosen])]
        for start in range(0, len(batch), CHUNK_ROWS):
            labeled += wiring.labels.record(batch[start:start + CHUNK_ROWS], source="simulator", key_id="harness")
    return StoredTraffic(rows=len(rows), labeled=labeled, reviews=int((decisions == "review").sum()),
                         declines=int((decisions == "decline").sum()), first=min(timestamps), last=max(timestamps))
