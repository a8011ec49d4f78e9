"""`simulate --url` sends transactions with predict's key and labels with the labels
function's key: in Azure they are different keys (README, Security)."""
import argparse

from shared.cli import _labels_key, _predict_key


def args(key=None, labels_key=None):
    return argparse.Namespace(key=key, labels_key=labels_key)


def test_each_function_gets_its_own_key(monkeypatch):
    for name in ("PREDICT_KEY", "LABELS_KEY", "FUNCTION_KEY"):
        monkeypatch.delenv(name, raising=False)
    assert (_predict_key(args("p", "l")), _labels_key(args("p", "l"))) == ("p", "l")
    monkeypatch.setenv("PREDICT_KEY", "env-p")
    monkeypatch.setenv("LABELS_KEY", "env-l")
    assert (_predict_key(args()), _labels_key(args())) == ("env-p", "env-l")
    assert (_predict_key(args("p")), _labels_key(args("p"))) == ("p", "env-l")  # the option wins


def test_one_key_serves_both_when_only_one_is_given(monkeypatch):
    for name in ("PREDICT_KEY", "LABELS_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("FUNCTION_KEY", "old")
    assert (_predict_key(args()), _labels_key(args())) == ("old", "old")
    monkeypatch.delenv("FUNCTION_KEY")
    assert (_predict_key(args()), _labels_key(args())) == (None, None)  # locally, keys are not checked
