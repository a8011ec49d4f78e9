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
