"""Decision bands from costs: approve, send to an analyst, or decline.

A score ``p`` is declined when ``p >= decline_threshold``, reviewed when
``review_threshold <= p < decline_threshold``, approved otherwise. The two thresholds
are chosen on validation data to minimise the expected cost under a :class:`CostModel`.

Cost of each decision for one transaction (the assumptions, stated once):

* approve: ``fraud_loss`` when it is fraud (the transaction amount, or a constant), else 0;
* review: ``review_cost`` whatever the class, and an analyst catches every fraud, so a
  reviewed fraud loses nothing (analysts who miss some fraud would raise this cost);
* decline: ``decline_cost`` when it is genuine (friction, lost sale, call to the bank),
  else 0: a declined fraud is an attempt stopped.

Only :func:`decide` and :class:`Bands` are on predict's path: plain float comparisons. The
search uses numpy; matplotlib is imported only when plotting, for the report.
"""
from __future__ import annotations

import io
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

Decision = Literal["approve", "review", "decline"]


@dataclass(frozen=True)
class CostModel:
    """What each decision costs; ``fraud_loss="amount"``: an approved fraud loses its amount."""

    review_cost: float
    decline_cost: float
    fraud_loss: Literal["amount"] | float = "amount"

    def __post_init__(self) -> None:
        for name in ("review_cost", "decline_cost"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        loss = self.fraud_loss
        if loss != "amount" and not (isinstance(loss, (int, float)) and math.isfinite(loss) and loss >= 0):
            raise ValueError(f'fraud_loss must be "amount" or a finite number >= 0, got {loss!r}')

    def to_dict(self) -> dict[str, Any]:
        return {"review_cost": self.review_cost, "decline_cost": self.decline_cost, "fraud_loss": self.fraud_loss}


@dataclass(frozen=True)
class Bands:
    """The chosen thresholds; ``math.inf`` means "never" (e.g. nothing is declined)."""

    review_threshold: float
    decline_threshold: float
    expected_cost_per_1000: float = math.nan
    table: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (for the model metadata): "never" thresholds become None."""
        return {"review_threshold": _json_threshold(self.review_threshold),
                "decline_threshold": _json_threshold(self.decline_threshold),
                "expected_cost_per_1000": self.expected_cost_per_1000, "table": self.table}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Bands:
        def threshold(value: Any) -> float:
            return math.inf if value is None else float(value)
        return cls(threshold(data["review_threshold"]), threshold(data["decline_threshold"]),
                   float(data.get("expected_cost_per_1000", math.nan)), list(data.get("table", [])))


def decide(probability: float, bands: Bands) -> Decision:
    """The decision for one score."""
    if math.isnan(probability):
        raise ValueError("probability is NaN")
    if probability >= bands.decline_threshold:
        return "decline"
    if probability >= bands.review_threshold:
        return "review"
    return "approve"


def _json_threshold(value: float) -> float | None:
    return None if math.isinf(value) else float(value)


# --- the search ---------------------------------------------------------------------


@dataclass(frozen=True)
class _Cumulative:
    """Per-decision costs summed over the rows scoring at or above each distinct score.

    ``cut`` j (0..g) declines, reviews or approves the j highest distinct scores;
    arrays have g + 1 entries, entry 0 being the empty set.
    """

    scores: np.ndarray      # distinct scores, descending (g)
    decline: np.ndarray     # cost if the top-j groups are declined
    review: np.ndarray
    approve: np.ndarray
    weight: np.ndarray      # population they stand for
    frauds: np.ndarray      # weighted frauds among them

    def threshold(self, cut: int) -> float:
        return float(self.scores[cut - 1]) if cut > 0 else math.inf

    def cost(self, decline_cut: int | np.ndarray, review_cut: int | np.ndarray) -> Any:
        """Total cost: decline the top ``decline_cut`` groups, review down to ``review_cut``."""
        return (self.decline[decline_cut] + self.review[review_cut] - self.review[decline_cut]
                + self.approve[-1] - self.approve[review_cut])


def _cumulative(y_true: Any, scores: Any, amounts: Any, costs: CostModel, sample_weight: Any) -> _Cumulative:
    scores = np.asarray(scores, dtype=np.float64)
    y = np.asarray(y_true)
    n = len(scores)
    if scores.ndim != 1 or y.shape != scores.shape:
        raise ValueError(f"y_true and scores must be 1-D of one length, got {y.shape} and {scores.shape}")
    if n == 0:
        raise ValueError("no rows to choose bands from")
    if not np.isfinite(scores).all():
        raise ValueError("scores must be finite")
    if not np.isin(y, (0, 1)).all():
        raise ValueError("y_true must hold 0 (genuine) and 1 (fraud) only")
    y = y.astype(np.float64)
    weight = np.ones(n) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
    if weight.shape != scores.shape or not np.isfinite(weight).all() or (weight < 0).any() or weight.sum() <= 0:
        raise ValueError("sample_weight must be finite, >= 0, not all 0, one per row")
    if costs.fraud_loss == "amount":
        if amounts is None:
            raise ValueError('amounts are needed when fraud_loss is "amount"')
        loss = np.asarray(amounts, dtype=np.float64)
        if loss.shape != scores.shape or not np.isfinite(loss).all() or (loss < 0).any():
            raise ValueError("amounts must be finite, >= 0, one per row")
    else:
        loss = np.full(n, float(costs.fraud_loss))

    order = np.argsort(-scores, kind="stable")
    sorted_scores = scores[order]
    # Rows with equal scores always get the same decision: sum them as one group.
    starts = np.flatnonzero(np.r_[True, sorted_scores[1:] != sorted_scores[:-1]])

    def cumulative(per_row: np.ndarray) -> np.ndarray:
        return np.r_[0.0, np.cumsum(np.add.reduceat(per_row[order], starts))]

    return _Cumulative(
        scores=sorted_scores[starts],
        decline=cumulative(weight * costs.decline_cost * (1.0 - y)),
        review=cumulative(weight * costs.review_cost),
        approve=cumulative(weight * loss * y),
        weight=cumulative(weight),
        frauds=cumulative(weight * y),
    )


def _prefix_argmin(values: np.ndarray, last: bool = False) -> np.ndarray:
    """For each position b, the index a <= b where ``values[:b + 1]`` is smallest: the
    first such index, or the last one with ``last``."""
    running = np.minimum.accumulate(values)
    new_minimum = np.r_[True, values[1:] <= running[:-1] if last else values[1:] < running[:-1]]
    return np.maximum.accumulate(np.where(new_minimum, np.arange(len(values)), 0))


def _optimal_cuts(c: _Cumulative) -> tuple[int, int]:
    # cost(a, b) = [D(a) - R(a)] + [R(b) - A(b)] + A(g): for each b the best a <= b is a
    # running minimum, so the whole search is O(g). Ties go to the least intervention.
    best_decline = _prefix_argmin(c.decline - c.review)
    review_cut = int(np.argmin(c.cost(best_decline, np.arange(len(c.weight)))))
    return int(best_decline[review_cut]), review_cut


def choose_bands(y_true: Any, scores: Any, amounts: Any, costs: CostModel,
                 sample_weight: Any = None, current_threshold: float | None = None) -> Bands:
    """The thresholds ``review <= decline`` with the least total expected cost on the data.

    The search is exact over every distinct score (each a candidate cut) in
    O(n log n) time: a sort, cumulative sums, and one running minimum.
    ``sample_weight`` are importance weights (a row stands for ``weight`` rows of the
    population, e.g. subsampled genuine rows), so costs are the population's.
    ``current_threshold`` adds a table row for declining at today's single threshold.
    """
    c = _cumulative(y_true, scores, amounts, costs, sample_weight)
    decline_cut, review_cut = _optimal_cuts(c)
    cuts = np.arange(len(c.weight))
    single = int(np.argmin(c.cost(cuts, cuts)))
    review_only = int(np.argmin(c.cost(0, cuts)))
    candidates = [("optimal", decline_cut, review_cut), ("single threshold, no review", single, single),
                  ("review only, no decline", 0, review_only), ("approve all", 0, 0)]
    if current_threshold is not None:
        at = int(np.searchsorted(-c.scores, -current_threshold, side="right"))  # groups with score >= t
        candidates.append((f"current threshold {current_threshold:.6g} (decline above)", at, at))
    per_1000 = 1000.0 / c.weight[-1]
    return Bands(
        review_threshold=c.threshold(review_cut),
        decline_threshold=c.threshold(decline_cut),
        expected_cost_per_1000=float(c.cost(decline_cut, review_cut) * per_1000),
        table=[_table_row(c, name, a, b) for name, a, b in candidates],
    )


def _table_row(c: _Cumulative, name: str, decline_cut: int, review_cut: int) -> dict[str, Any]:
    total, frauds = c.weight[-1], c.frauds[-1]
    return {
        "band": name,
        "review_threshold": _json_threshold(c.threshold(review_cut)),
        "decline_threshold": _json_threshold(c.threshold(decline_cut)),
        "cost_per_1000": round(float(c.cost(decline_cut, review_cut) * 1000.0 / total), 4),
        "approved": round(float(1 - c.weight[review_cut] / total), 6),
        "reviewed": round(float((c.weight[review_cut] - c.weight[decline_cut]) / total), 6),
        "declined": round(float(c.weight[decline_cut] / total), 6),
        # Reviewed frauds are caught too (the review assumption); None when there are none.
        "frauds_caught": round(float(c.frauds[review_cut] / frauds), 6) if frauds > 0 else None,
    }


# --- cost curve for the report ------------------------------------------------------


@dataclass(frozen=True)
class CostCurve:
    """Cost per 1,000 transactions against the decline threshold.

    ``cost_per_1000[i]``: declining at ``decline_thresholds[i]`` with the best review
    threshold for it (``review_thresholds[i]``); ``single_threshold_cost_per_1000[i]``:
    the same decline threshold and no review band. The two constants are the references
    drawn across the plot.
    """

    decline_thresholds: list[float]
    review_thresholds: list[float]
    cost_per_1000: list[float]
    single_threshold_cost_per_1000: list[float]
    approve_all_cost_per_1000: float
    decline_nothing_cost_per_1000: float  # the best review-only band

    def to_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


def cost_curve(y_true: Any, scores: Any, amounts: Any, costs: CostModel, sample_weight: Any = None,
               max_points: int = 2000) -> CostCurve:
    """The data of the cost curve, at most ``max_points`` decline thresholds (spread both
    evenly and geometrically over the ranked scores, so the high scores, where bands sit,
    stay resolved), always including the optimum."""
    c = _cumulative(y_true, scores, amounts, costs, sample_weight)
    g = len(c.scores)
    # For decline cut a, the best review cut b >= a minimises R(b) - A(b): a suffix
    # minimum, found as a prefix minimum of the reversed array (ties: the least review).
    tail = (c.review - c.approve)[::-1]
    best_review = len(tail) - 1 - _prefix_argmin(tail, last=True)[::-1]
    decline_cut, _ = _optimal_cuts(c)
    if g > max_points:
        picks = np.r_[np.linspace(1, g, max_points // 2), np.geomspace(1, g, max_points // 2), max(decline_cut, 1)]
        cuts = np.unique(np.rint(picks).astype(int))
    else:
        cuts = np.arange(1, g + 1)
    per_1000 = 1000.0 / c.weight[-1]
    return CostCurve(
        decline_thresholds=c.scores[cuts - 1].tolist(),
        review_thresholds=c.scores[best_review[cuts] - 1].tolist(),
        cost_per_1000=(c.cost(cuts, best_review[cuts]) * per_1000).tolist(),
        single_threshold_cost_per_1000=(c.cost(cuts, cuts) * per_1000).tolist(),
        approve_all_cost_per_1000=float(c.cost(0, 0) * per_1000),
        decline_nothing_cost_per_1000=float(c.cost(0, best_review[0]) * per_1000),
    )


def plot_cost_curve(curve: CostCurve, bands: Bands | None = None) -> bytes:
    """The cost curve as a PNG (matplotlib's Agg canvas: no display, no pyplot state)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(7, 4.2), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    axes.plot(curve.decline_thresholds, curve.cost_per_1000, label="with the best review band")
    axes.plot(curve.decline_thresholds, curve.single_threshold_cost_per_1000, linestyle="--",
              label="decline only (no review)")
    axes.axhline(curve.approve_all_cost_per_1000, color="grey", linewidth=0.8, label="approve all")
    axes.axhline(curve.decline_nothing_cost_per_1000, color="grey", linestyle=":", linewidth=0.8,
                 label="review only (decline nothing)")
    if bands is not None and math.isfinite(bands.decline_threshold):
        axes.plot([bands.decline_threshold], [bands.expected_cost_per_1000], "o", color="black",
                  label=f"optimum: review ≥ {bands.review_threshold:.3g}, decline ≥ {bands.decline_threshold:.3g}")
    # Declining nearly everything costs orders of magnitude more: keep the useful range.
    axes.set_ylim(0, 1.5 * max(curve.approve_all_cost_per_1000, curve.decline_nothing_cost_per_1000, 1e-9))
    axes.set_xlabel("decline threshold (fraud probability)")
    axes.set_ylabel("expected cost per 1,000 transactions")
    axes.set_title("Expected cost of the decision bands")
    axes.legend(fontsize="small")
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()
