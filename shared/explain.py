"""Reason codes for one decision, faithful to the forest that made it.

Tree-path contributions (Saabas): in every tree, walking the row's decision path from
the root to its leaf, the change of the node's fraud probability from parent to child
is credited to the parent's split feature; contributions are averaged over the trees
and the bias is the mean root probability. Their sum telescopes, so

    bias + sum(contributions) == forest.predict_proba(row)[:, 1]

to rounding (~1e-15): the reasons explain exactly the score that was served.

The explainer is built once per model from the trees' arrays (:meth:`ForestExplainer.
from_model`) and can be saved as plain numpy arrays (:meth:`to_bytes`), so predict can
load it beside the ONNX model without importing scikit-learn. Explaining one row walks
all trees at once, one numpy step per tree level (≤ max depth steps), no per-node loop.

Only numpy is imported here: predict's cold start must stay fast.
"""
from __future__ import annotations

import io
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

_ROW_CHUNK = 4096  # rows per vectorised step when explaining many rows: bounds memory


@dataclass(frozen=True)
class Explanation:
    """Contributions of each feature (model order) to one row's fraud probability."""

    bias: float
    contributions: np.ndarray
    values: np.ndarray
    feature_names: tuple[str, ...]

    @property
    def probability(self) -> float:
        return self.bias + float(self.contributions.sum())

    def by_feature(self) -> dict[str, float]:
        return dict(zip(self.feature_names, self.contributions.tolist()))

    def reasons(self, k: int = 3) -> list[dict[str, Any]]:
        return top_reasons(self.by_feature(), dict(zip(self.feature_names, self.values.tolist())), k)


class ForestExplainer:
    """Exact tree-path contributions of a fitted binary random forest.

    All trees' nodes live in flat arrays; the last node is a sink that every leaf (and
    the sink itself) leads to with a zero change, so walking a fixed number of steps
    leaves each tree's contribution complete whatever the depth of its leaf.
    """

    _ARRAYS = ("children", "feature", "threshold", "missing_left", "delta", "roots")

    def __init__(self, *, feature_names: Sequence[str], children: np.ndarray, feature: np.ndarray,
                 threshold: np.ndarray, missing_left: np.ndarray, delta: np.ndarray, roots: np.ndarray,
                 bias: float, n_steps: int):
        self.feature_names = tuple(feature_names)
        self.children = children            # (n_nodes, 2): [left, right]; flat node ids
        self.feature = feature              # split feature (0 for leaves and the sink: adds 0)
        self.threshold = threshold          # float64, compared with the float32 row, like sklearn
        self.missing_left = missing_left    # where NaN goes (sklearn's missing_go_to_left)
        self.delta = delta                  # (p[node] - p[parent]) / n_trees; 0 for roots and the sink
        self.roots = roots
        self.bias = float(bias)
        self.n_steps = int(n_steps)
        self._flat_children = children.reshape(-1)

    @classmethod
    def from_model(cls, model: Any, feature_names: Sequence[str]) -> ForestExplainer:
        """Build from a fitted RandomForestClassifier, or a pipeline ending in one (SMOTE
        only acts while fitting, so at inference the pipeline is its final forest)."""
        forest = model.steps[-1][1] if hasattr(model, "steps") else model
        classes = list(forest.classes_)
        if len(classes) != 2 or getattr(forest, "n_outputs_", 1) != 1:
            raise ValueError(f"need a single-output binary classifier, got classes {classes}")
        positive = classes.index(1) if 1 in classes else 1
        if forest.n_features_in_ != len(feature_names):
            raise ValueError(f"the forest has {forest.n_features_in_} features, "
                             f"{len(feature_names)} names were given")

        trees = [estimator.tree_ for estimator in forest.estimators_]
        n_trees = len(trees)
        sizes = np.array([tree.node_count for tree in trees])
        offsets = np.concatenate(([0], np.cumsum(sizes)))
        sink = int(offsets[-1])
        children = np.full((sink + 1, 2), sink, dtype=np.intp)
        feature = np.zeros(sink + 1, dtype=np.intp)
        threshold = np.zeros(sink + 1, dtype=np.float64)
        missing_left = np.zeros(sink + 1, dtype=bool)
        delta = np.zeros(sink + 1, dtype=np.float64)
        root_probability = np.empty(n_trees)
        for index, (tree, start) in enumerate(zip(trees, offsets[:-1])):
            nodes = slice(start, start + tree.node_count)
            left, right = tree.children_left, tree.children_right
            internal = left >= 0  # leaves have -1 children
            children[nodes][internal] = np.column_stack((left[internal], right[internal])) + start
            feature[nodes][internal] = tree.feature[internal]
            threshold[nodes] = tree.threshold
            missing_left[nodes] = getattr(tree, "missing_go_to_left", False)  # before sklearn 1.3: no NaN support
            # scikit-learn >= 1.4 stores class fractions, older versions weighted counts:
            # normalising each row gives the node's probabilities either way.
            value = tree.value[:, 0, :]
            probability = value[:, positive] / value.sum(axis=1)
            parent_probability = np.empty_like(probability)
            parent_probability[0] = probability[0]
            parent_probability[left[internal]] = probability[internal]
            parent_probability[right[internal]] = probability[internal]
            delta[nodes] = (probability - parent_probability) / n_trees
            root_probability[index] = probability[0]
        return cls(feature_names=feature_names, children=children, feature=feature, threshold=threshold,
                   missing_left=missing_left, delta=delta, roots=offsets[:-1].astype(np.intp),
                   bias=float(root_probability.mean()), n_steps=max(tree.max_depth for tree in trees))

    def to_bytes(self) -> bytes:
        """The explainer as an ``.npz`` of plain arrays (no pickle), for publishing beside a model."""
        buffer = io.BytesIO()
        np.savez(buffer, feature_names=np.array(self.feature_names, dtype=str),
                 bias=np.array(self.bias), n_steps=np.array(self.n_steps),
                 **{name: getattr(self, name) for name in self._ARRAYS})
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> ForestExplainer:
        with np.load(io.BytesIO(data), allow_pickle=False) as saved:
            return cls(feature_names=[str(name) for name in saved["feature_names"]],
                       bias=float(saved["bias"]), n_steps=int(saved["n_steps"]),
                       **{name: saved[name] for name in cls._ARRAYS})

    def explain(self, row: Sequence[float] | np.ndarray) -> Explanation:
        """Contributions for one row, in the model's feature order."""
        values = np.asarray(row, dtype=np.float64)
        if values.shape != (len(self.feature_names),):
            raise ValueError(f"expected {len(self.feature_names)} feature values, got shape {values.shape}")
        # scikit-learn casts X to float32 and compares it with float64 thresholds.
        x = values.astype(np.float32)
        has_missing = bool(np.isnan(x).any())
        node = self.roots
        features = np.empty((self.n_steps, len(node)), dtype=np.intp)
        deltas = np.empty((self.n_steps, len(node)))
        for step in range(self.n_steps):
            split = self.feature[node]
            x_split = x[split]
            go_right = x_split > self.threshold[node]
            if has_missing:
                go_right = np.where(np.isnan(x_split), ~self.missing_left[node], go_right)
            node = self._flat_children[2 * node + go_right]
            features[step] = split
            deltas[step] = self.delta[node]
        contributions = np.bincount(features.ravel(), weights=deltas.ravel(), minlength=len(self.feature_names))
        return Explanation(self.bias, contributions, values, self.feature_names)

    def explain_features(self, features: Mapping[str, float]) -> Explanation:
        """Contributions for one transaction given as a features dict (any key order)."""
        return self.explain([features[name] for name in self.feature_names])

    def contributions(self, rows: np.ndarray) -> np.ndarray:
        """Contributions for many rows, shape (n_rows, n_features); add ``bias`` for the scores."""
        rows = np.asarray(rows, dtype=np.float64)
        n_features = len(self.feature_names)
        if rows.ndim != 2 or rows.shape[1] != n_features:
            raise ValueError(f"expected rows of {n_features} features, got shape {rows.shape}")
        out = np.empty(rows.shape)
        for start in range(0, len(rows), _ROW_CHUNK):
            x = rows[start:start + _ROW_CHUNK].astype(np.float32)
            n = len(x)
            flat_x = x.reshape(-1)
            row_base = (np.arange(n) * n_features)[:, None]
            node = np.broadcast_to(self.roots, (n, len(self.roots)))
            total = np.zeros(n * n_features)
            for _ in range(self.n_steps):
                split = row_base + self.feature[node]
                x_split = flat_x[split]
                go_right = np.where(np.isnan(x_split), ~self.missing_left[node], x_split > self.threshold[node])
                node = self._flat_children[2 * node + go_right]
                total += np.bincount(split.ravel(), weights=self.delta[node].ravel(), minlength=n * n_features)
            out[start:start + n] = total.reshape(n, n_features)
        return out


# --- reason codes -------------------------------------------------------------------


def top_reasons(contributions: Mapping[str, float], features: Mapping[str, float], k: int = 3) -> list[dict[str, Any]]:
    """The k features that raise the fraud probability most: why a transaction is risky.

    When fewer than k features raise it, the list is filled with the largest remaining
    contributions by absolute value. A feature with a zero contribution played no part in
    the score, so it is never a reason: the list is shorter than k only when fewer than k
    features contributed at all. Ties keep the model's feature order.
    """
    ranked = sorted(contributions.items(), key=lambda item: -item[1])  # stable: ties keep order
    chosen = [(name, c) for name, c in ranked if c > 0][:k]
    if len(chosen) < k:
        taken = {name for name, _ in chosen}
        rest = sorted(((name, c) for name, c in contributions.items() if name not in taken and c != 0),
                      key=lambda item: -abs(item[1]))
        chosen += rest[:k - len(chosen)]
    return [{
        "feature": name,
        "value": float(features[name]),
        "contribution": round(float(c), 6),
        "direction": "raises" if c > 0 else "lowers",
        "text": describe(name, float(features[name])),
    } for name, c in chosen]


def _days(n: str) -> str:
    return "the last day" if n == "1" else f"the last {n} days"


def _count(value: float, noun: str) -> str:
    count = int(round(value))
    return f"{count} {noun}{'' if count == 1 else 's'}"


def _number(value: float) -> str:
    return f"{value:.6g}"


# Night is hour <= 6 UTC in shared/features.py (NIGHT_LAST_HOUR); a test keeps them in step.
_NIGHT = "payment at night (00:00-06:59 UTC)"
_DAY = "payment in the daytime (07:00-23:59 UTC)"

# (pattern, formatter(match, value)), first match wins. A new feature needs one row here;
# until then it is described by the generic "<feature> = <value>".
_DESCRIPTIONS: list[tuple[re.Pattern[str], Callable[[re.Match[str], float], str]]] = [
    (re.compile(r"amount"), lambda m, v: f"amount {v:.2f}"),
    (re.compile(r"is_night"), lambda m, v: _NIGHT if v >= 0.5 else _DAY),
    (re.compile(r"is_weekend"),
     lambda m, v: "payment on a weekend (UTC)" if v >= 0.5 else "payment on a weekday (UTC)"),
    (re.compile(r"amount_to_customer_mean_(\d+)d"),
     lambda m, v: f"amount is {v:.1f}× the card's {m[1]}-day mean"),
    (re.compile(r"customer_nb_tx_(\d+)d"),
     lambda m, v: f"{_count(v, 'transaction')} on this card in {_days(m[1])}"),
    (re.compile(r"customer_mean_amount_(\d+)d"),
     lambda m, v: f"card's mean amount over {_days(m[1])} is {v:.2f}"),
    (re.compile(r"terminal_nb_tx_(\d+)d"),
     lambda m, v: f"{_count(v, 'transaction')} at this terminal in its {m[1]}-day window (known labels)"),
    (re.compile(r"terminal_risk_(\d+)d"),
     lambda m, v: f"terminal had {v * 100:.0f}% fraud in its {m[1]}-day window (known labels)"),
    # The habit leaves out the most recent days (FeatureSpec.customer_habit_days).
    (re.compile(r"customer_habit_nb_tx"),
     lambda m, v: f"{_count(v, 'transaction')} on this card in its habit window (recent days left out)"),
    (re.compile(r"customer_habit_mean_amount"), lambda m, v: f"card's habitual mean amount is {v:.2f}"),
    (re.compile(r"amount_to_customer_habit_mean"), lambda m, v: f"amount is {v:.1f}× the card's habitual mean"),
    (re.compile(r"amount_customer_habit_zscore"),
     lambda m, v: f"amount is {v:+.1f} standard deviations from the card's habit"),
    (re.compile(r"amount_to_customer_habit_max"),
     lambda m, v: f"amount is {v:.1f}× the card's largest habitual amount"),
    (re.compile(r"customer_max_amount_(\d+)d_to_habit_mean"),
     lambda m, v: f"largest earlier amount in {_days(m[1])} is {v:.1f}× the card's habitual mean"),
    (re.compile(r"customer_mean_amount_(\d+)d_to_habit_mean"),
     lambda m, v: f"earlier amounts in {_days(m[1])} average {v:.1f}× the card's habitual mean"),
    (re.compile(r"terminal_fraud_run_days"),
     lambda m, v: f"terminal's known fraud spans {_count(v, 'day')}" if v >= 0.5
     else "no known fraud at this terminal in its longest window"),
    (re.compile(r"terminal_days_since_last_fraud"),
     lambda m, v: f"terminal's latest known fraud was {_count(v, 'day')} ago"),
    (re.compile(r"terminal_days_since_first_fraud"),
     lambda m, v: f"terminal's earliest known fraud in its window was {_count(v, 'day')} ago"),
]


def describe(feature: str, value: float) -> str:
    """A sentence an analyst can read for one feature's value."""
    if not math.isfinite(value):
        return f"{feature} = {value}"
    for pattern, formatter in _DESCRIPTIONS:
        match = pattern.fullmatch(feature)
        if match:
            return formatter(match, value)
    return f"{feature} = {_number(value)}"
