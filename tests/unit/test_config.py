import pytest

from shared.config import ConfigurationError, Settings


def test_defaults_are_the_embedded_local_setup():
    settings = Settings.from_env({})
    assert settings.storage_connection == "UseDevelopmentStorage=true"
    assert settings.database_url.startswith("sqlite:///")
    assert settings.retrain_threshold == 1000 and settings.poison_queue == "transactions-poison"


def test_identity_based_storage_has_no_connection_string():
    settings = Settings.from_env({"AzureWebJobsStorage__accountName": "acct"})
    assert settings.storage_connection == "" and settings.storage_account_name == "acct"


def test_bad_numbers_are_named():
    with pytest.raises(ConfigurationError, match="RETRAIN_THRESHOLD"):
        Settings.from_env({"RETRAIN_THRESHOLD": "many"})
    with pytest.raises(ConfigurationError, match="RETRAIN_THRESHOLD"):
        Settings.from_env({"RETRAIN_THRESHOLD": "0"})


def test_signing_key_not_in_repr():
    assert "topsecret" not in repr(Settings.from_env({"MODEL_SIGNING_KEY": "topsecret"}))


def test_enqueue_timeout_has_a_default_and_is_validated():
    assert Settings.from_env({}).enqueue_timeout_ms == 5000
    assert Settings.from_env({"ENQUEUE_TIMEOUT_MS": "1500"}).enqueue_timeout_ms == 1500
    with pytest.raises(ConfigurationError, match="ENQUEUE_TIMEOUT_MS"):
        Settings.from_env({"ENQUEUE_TIMEOUT_MS": "0"})
