"""host.json queue settings and their defaults, message decoding, polling backoff, connections."""
from __future__ import annotations

import base64

import pytest

from devhost.config import DevHostError
from devhost.queue_trigger import (
    PollingBackoff,
    QueueOptions,
    UndecodableMessage,
    decode_body,
    normalize_queue_name,
    poison_queue_name,
    queue_service,
)


def queues(**section):
    return {"version": "2.0", "extensions": {"queues": section}}


def test_defaults_are_the_hosts():
    assert QueueOptions.from_host_json({}) == QueueOptions(
        batch_size=16, new_batch_threshold=8, max_dequeue_count=5, visibility_timeout=0.0,
        max_polling_interval=60.0, message_encoding="base64")


def test_explicit_values_and_derived_threshold():
    options = QueueOptions.from_host_json(queues(batchSize=4, maxDequeueCount=2, visibilityTimeout="00:00:10",
                                                 maxPollingInterval="00:00:02", messageEncoding="None"))
    assert options == QueueOptions(4, 2, 2, 10.0, 2.0, "none")
    assert QueueOptions.from_host_json(queues(batchSize=5)).new_batch_threshold == 2
    assert QueueOptions.from_host_json(queues(batchSize=1)).new_batch_threshold == 0
    assert QueueOptions.from_host_json(queues(newBatchThreshold="3")).new_batch_threshold == 3


def test_keys_ignore_case_and_numeric_polling_interval_is_milliseconds():
    options = QueueOptions.from_host_json({"Extensions": {"Queues": {"MaxPollingInterval": 2000, "BATCHSIZE": 8}}})
    assert options.max_polling_interval == pytest.approx(2.0)
    assert options.batch_size == 8


@pytest.mark.parametrize("section, message", [
    ({"batchSize": 0}, "batchSize must be 1..32"),
    ({"batchSize": 33}, "batchSize must be 1..32"),
    ({"batchSize": "many"}, "whole number"),
    ({"maxDequeueCount": 0}, "must not be less than 1"),
    ({"maxPollingInterval": "00:00:00.050"}, "must not be less than 00:00:00.100"),
    ({"visibilityTimeout": "soon"}, "not a time span"),
    ({"messageEncoding": "utf8"}, "base64 or none"),
])
def test_invalid_settings_are_refused(section, message):
    with pytest.raises(DevHostError, match=message):
        QueueOptions.from_host_json(queues(**section))


def test_base64_decoding_follows_dotnet_rules():
    text = base64.b64encode(b'{"id": 1}').decode()
    assert decode_body(text, "base64") == b'{"id": 1}'
    assert decode_body(f" {text[:4]}\r\n{text[4:]}\t", "base64") == b'{"id": 1}'  # whitespace ignored
    assert decode_body("", "base64") == b""
    for bad in ("not base64!", "YWJj=", "YWJj==", "YWJjZA", "YW==YWJj", "=YWJ", "é"):
        with pytest.raises(UndecodableMessage):
            decode_body(bad, "base64")


def test_encoding_none_passes_text_through():
    assert decode_body("plain ü", "none") == "plain ü".encode()
    assert decode_body(None, "none") == b""


def test_queue_names_are_lower_cased_and_validated_like_the_host_does():
    assert normalize_queue_name(" Transactions-In ") == "transactions-in"
    for bad in ("", "ab", "has space", "double--hyphen", "-leading", "trailing-", "q" * 64, "under_score"):
        with pytest.raises(DevHostError, match="invalid queue name"):
            normalize_queue_name(bad)


def test_poison_queue_names():
    assert poison_queue_name("transactions") == "transactions-poison"
    assert poison_queue_name("transactions-poison") is None
    assert poison_queue_name("q" * 57) is None
    assert poison_queue_name("q" * 56) == "q" * 56 + "-poison"


def test_polling_backoff_grows_randomly_to_the_maximum_and_resets():
    backoff = PollingBackoff(maximum=1.0, uniform=lambda low, high: 1.0)
    delays = [backoff.next_delay(False) for _ in range(6)]
    assert delays == pytest.approx([0.1, 0.2, 0.3, 0.5, 0.9, 1.0])
    assert backoff.next_delay(False) == 1.0
    assert backoff.next_delay(True) == pytest.approx(0.1)
    assert backoff.next_delay(False) == pytest.approx(0.2)
    jittered = PollingBackoff(maximum=60.0)
    for _ in range(2):
        jittered.next_delay(False)
    assert 0.18 <= jittered.next_delay(False) <= 0.34  # 0.1 + [0.8, 1.2] * 2 * 0.1


def test_connection_setting_lookup_follows_the_webjobs_prefix_rule():
    direct = queue_service("MyStorage", {"MyStorage": "UseDevelopmentStorage=true"})
    assert direct.url.startswith("http://127.0.0.1:10001/devstoreaccount1")
    conn = ("DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=a2V5;"
            "QueueEndpoint=http://127.0.0.1:1/devstoreaccount1;")
    prefixed = queue_service("MyStorage", {"AzureWebJobsMyStorage": conn, "MyStorage": "UseDevelopmentStorage=true"})
    assert prefixed.url.startswith("http://127.0.0.1:1/")
    assert queue_service(None, {"AzureWebJobsStorage": conn}).url.startswith("http://127.0.0.1:1/")
    with pytest.raises(DevHostError, match="storage connection 'Missing' is not configured"):
        queue_service("Missing", {})
