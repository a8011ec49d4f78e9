"""What `simulate` prints: live decisions against the truth, and the model's holdout rates."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from shared.decisions import decide
from shared.operations import holdout_rates, live_summary


def test_live_summary_counts_decisions_against_the_truth():
    frame = pd.DataFrame({"label": [1, 1, 1, 0, 0, 0, 0, 0, 1, 0],
                          "fraud_scenario": [2, 3, 4, 0, 0, 0, 0, 0, 1, 0]})
    answers = [{"decision": "decline"}, {"decision": "review"}, {"decision": "approve"},
               {"decision": "decline"}, {"decision": "review"}, {"decision": "approve"},
               {"decision": "approve"}, {"decision": "approve", "degraded": True}, None, {"decision": "approve"}]
    summary = live_summary(frame, answers)
    assert summary["sent"] == 9 and summary["failed"] == 1 and summary["degraded"] == 1
    assert summary["decisions"] == {"approve": 5, "review": 2, "decline": 2}
    # The unsent fraud counts nowhere: 3 frauds sent, 6 genuine.
    assert summary["true_frauds"] == 3
    assert summary["frauds_by_scenario"] == {"large_amount": 0, "compromised_terminal": 1, "compromised_card": 1,
                                             "card_testing": 1}
    assert summary["flagged_frauds_by_scenario"] == {"large_amount": 0, "compromised_terminal": 1,
                                                     "compromised_card": 1, "card_testing": 0}
    assert summary["decline"] == {"precision": 0.5, "recall": round(1 / 3, 6)}
    assert summary["review_or_decline"] == {"precision": 0.5, "recall": round(2 / 3, 6)}
    assert summary["genuine_flagged_share"] == {"review_or_decline": round(2 / 6, 6), "decline": round(1 / 6, 6)}


def test_live_summary_of_nothing_flagged_has_no_precision():
    summary = live_summary(pd.DataFrame({"label": [0, 1], "fraud_scenario": [0, 2]}),
                           [{"decision": "approve"}, {"decision": "approve"}])
    assert summary["decline"] == {"precision": None, "recall": 0.0}
    assert summary["genuine_flagged_share"]["decline"] == 0.0


def test_holdout_rates_from_the_decision_metrics():
    # 1,000 holdout rows, 10 frauds; 10 declined of which 5 frauds; 20 reviewed of which 3 frauds.
    metadata = {"version": "v1", "metrics": {"rows": 1000, "population_rows": 1000.0, "frauds": 10},
                "decision_metrics": {"approve": {"share": 0.97, "fraud_share": 0.2},
                                     "review": {"share": 0.02, "fraud_share": 0.3},
                                     "decline": {"share": 0.01, "fraud_share": 0.5}}}
    rates = holdout_rates(metadata, "cost")
    assert rates["decline"]["false_positive_rate"] == pytest.approx(5 / 990, abs=1e-6)
    assert rates["decline"]["precision"] == pytest.approx(0.5) and rates["decline"]["recall"] == 0.5
    assert rates["review_or_decline"]["false_positive_rate"] == pytest.approx(22 / 990, abs=1e-6)
    assert rates["review_or_decline"]["recall"] == 0.8
    # One threshold: decline above it, from the metrics at that threshold.
    metadata["metrics"].update({"flagged_share": 0.01, "precision": 0.5, "recall": 0.5})
    assert holdout_rates(metadata, "threshold")["decline"]["false_positive_rate"] == pytest.approx(5 / 990, abs=1e-6)


def test_holdout_rates_match_the_holdout_they_describe(model_factory):
    from shared.usecases.publishing import package_candidate

    candidate = model_factory.candidate
    metadata = package_candidate(candidate, model_factory.params, "max_f1", "").metadata
    rates = holdout_rates(metadata, "cost")
    decisions = np.array([decide(float(p), candidate.bands) for p in candidate.holdout_scores()])
    genuine = candidate.holdout["label"].to_numpy() == 0
    weight = candidate.holdout["weight"].to_numpy()
    for band, chosen in (("decline", decisions == "decline"), ("review_or_decline", decisions != "approve")):
        actual = weight[chosen & genuine].sum() / weight[genuine].sum()
        assert rates[band]["false_positive_rate"] == pytest.approx(actual, abs=1e-6)
