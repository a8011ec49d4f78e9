"""Whoever holds a labels key cannot quietly teach the model to let fraud through.

The attack: relabel most recent frauds as genuine, then let retraining run. The challenger
learns the poisoned labels, and its holdout is built from the same poisoned labels — but
the champion's guard set (trusted labels frozen when it was promoted, from a hash partition
training never sees) shows it clearly worse, so it is not promoted. The operator then
revokes the attacker's labels by key, and the transactions fall back to their true labels.
"""
import pytest

from harness.app import recent_start, retrain
from shared.operations import import_history
from shared.schema import Label
from shared.simulator import simulate_for_volume
from shared.storage.labels import LabelFilter
from shared.training import GateRules

pytestmark = pytest.mark.slow


def test_poisoned_labels_are_caught_by_the_guard_set_and_revocable(app_env):
    days = 45
    history = simulate_for_volume(120_000, seed=5, n_days=days, start_date=recent_start(days))
    import_history(app_env, history)
    # Few frauds survive the attack in the holdout: a low minimum lets the decision reach the guard.
    gate = GateRules(tolerance=0.05, min_frauds=5, confidence=0.9, guard_tolerance=0.02)

    # The champion, promoted with a guard set of matured labels (maturity 0 days here: the
    # imported labels count as old).
    first = retrain(app_env, force=True, gate=gate, label_maturity_days=0)
    assert first.status == "promoted", first.reason
    guard = app_env.store.load_guard(first.model_version)
    assert guard is not None and guard["label"].sum() >= 10

    # The attack: a label source flips 95 % of the frauds to genuine, and marks as many genuine
    # transactions fraud, so the poisoned holdout still holds plenty of "frauds".
    frauds = history.loc[history["label"] == 1, "transaction_id"]
    flipped = frauds.sample(frac=0.95, random_state=0).tolist()
    fake = history.loc[history["label"] == 0, "transaction_id"].sample(len(flipped), random_state=1).tolist()
    app_env.labels.record([Label(i, False) for i in flipped] + [Label(i, True) for i in fake], source="feed",
                          key_id="stolen-key")

    poisoned = retrain(app_env, force=True, gate=gate, label_maturity_days=0)
    assert poisoned.status == "rejected", poisoned.reason
    assert app_env.store.current_version() == first.model_version
    # Whatever the poisoned holdout says, the guard set alone vetoes it: clearly worse on trusted labels.
    guard_result = poisoned.details["guard"]
    assert guard_result["high"] < -gate.guard_tolerance and guard_result["delta"] < -0.1, guard_result

    # The operator revokes everything that key sent; the true labels are back.
    assert app_env.labels.revoke(LabelFilter(key_id="stolen-key")) == len(flipped) + len(fake)
    assert app_env.transactions.find(flipped[0])["label"] is True
    assert app_env.transactions.find(fake[0])["label"] is False
    assert app_env.labels.labeled_count() == len(history)
