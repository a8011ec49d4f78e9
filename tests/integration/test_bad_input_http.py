"""Hand-written bad input over real HTTP, through the dev host, to the real function folders.

Each request gets the right 4xx and a JSON body that names the field (never a 5xx),
and nothing that was refused reaches the database.
"""
from __future__ import annotations

import json
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import requests

ROOT = Path(__file__).resolve().parents[2]
MiB = 1024 * 1024

VALID = {"customer_id": "C000001", "terminal_id": "T000001", "amount": 57.3}


@pytest.fixture(scope="module")
def served(azurite, model_factory, tmp_path_factory):
    """The function app under the dev host on 127.0.0.1 (Azurite, temporary SQLite, a published model)."""
    from devhost import FunctionHost
    from harness.app import configure_app
    from shared.wiring import reset_wiring

    database = tmp_path_factory.mktemp("bad-input") / "fraud.db"
    with pytest.MonkeyPatch.context() as monkeypatch:
        services = configure_app(monkeypatch, azurite.connection_string, f"sqlite:///{database}",
                                 suffix=uuid.uuid4().hex[:10], MODEL_REFRESH_SECONDS="600")
        model_factory.publish(services.store)
        try:
            with FunctionHost(ROOT, settings={"AzureWebJobs.retrain_function.Disabled": "true"}, port=0) as host:
                yield host, services
        finally:
            reset_wiring()


def post(host, path: str, data: bytes, content_type: str | None = "application/json") -> requests.Response:
    headers = {"Content-Type": content_type} if content_type else {}
    response = requests.post(f"{host.base_url}{path}", data=data, headers=headers, timeout=30)
    assert response.status_code < 500, (response.status_code, response.text[:300])
    return response


def problems(response: requests.Response) -> dict[str, str]:
    """{field: message} of a 4xx body, after checking its shape."""
    assert response.headers["Content-Type"].startswith("application/json"), response.headers
    body = response.json()
    assert isinstance(body["error"], str) and body["error"]
    assert isinstance(body["errors"], list) and body["errors"], body
    for entry in body["errors"]:
        assert set(entry) == {"field", "message"} and entry["message"], entry
    return {entry["field"]: entry["message"] for entry in body["errors"]}


def obj(**fields) -> bytes:
    return json.dumps({**VALID, **fields}).encode()


def nested(depth: int) -> bytes:
    return ('{"customer_id": ' + "[" * depth + "]" * depth + ', "terminal_id": "T", "amount": 1}').encode()


PREDICT_CASES = [
    # (id, body, content type, status, {field: part of the message})
    ("empty body", b"", "application/json", 400, {"body": "empty"}),
    ("blank body", b" \r\n\t ", "application/json", 400, {"body": "empty"}),
    ("invalid utf-8", b'{"customer_id": "\xff\xfe", "terminal_id": "T", "amount": 1}', "application/json", 400,
     {"body": "UTF-8"}),
    ("utf-16 body", json.dumps(VALID).encode("utf-16"), "application/json", 400, {"body": "UTF-8"}),
    ("utf-8 bom", b"\xef\xbb\xbf" + json.dumps(VALID).encode(), "application/json", 400, {"body": "malformed"}),
    ("truncated json", b'{"customer_id": "C", "amount": ', "application/json", 400, {"body": "malformed"}),
    ("array", b'[{"customer_id": "C", "terminal_id": "T", "amount": 1}]', "application/json", 400,
     {"body": "JSON object"}),
    ("string", b'"hello"', "application/json", 400, {"body": "JSON object"}),
    ("number", b"42", "application/json", 400, {"body": "JSON object"}),
    ("null", b"null", "application/json", 400, {"body": "JSON object"}),
    ("true", b"true", "application/json", 400, {"body": "JSON object"}),
    ("huge float", b'{"customer_id": "C", "terminal_id": "T", "amount": 1e400}', "application/json", 400,
     {"amount": "finite"}),
    ("huge negative float", b'{"customer_id": "C", "terminal_id": "T", "amount": -1e400}', "application/json",
     400, {"amount": "finite"}),
    ("huge integer", obj(amount=10 ** 300), "application/json", 400, {"amount": "between"}),
    ("integer with 5000 digits", b'{"customer_id": "C", "terminal_id": "T", "amount": 1' + b"0" * 5000 + b"}",
     "application/json", 400, {"body": "digits"}),
    ("NaN", b'{"customer_id": "C", "terminal_id": "T", "amount": NaN}', "application/json", 400,
     {"body": "NaN"}),
    ("Infinity", b'{"customer_id": "C", "terminal_id": "T", "amount": Infinity}', "application/json", 400,
     {"body": "Infinity"}),
    ("-Infinity", b'{"customer_id": "C", "terminal_id": "T", "amount": -Infinity}', "application/json", 400,
     {"body": "Infinity"}),
    ("negative amount", obj(amount=-5), "application/json", 400, {"amount": "between"}),
    ("tiny negative amount", obj(amount=-1e-9), "application/json", 400, {"amount": "between"}),
    ("amount over the limit", obj(amount=1_000_000.01), "application/json", 400, {"amount": "between"}),
    ("string amount", obj(amount="12.50"), "application/json", 400, {"amount": "number"}),
    ("boolean amount", obj(amount=True), "application/json", 400, {"amount": "number"}),
    ("null amount", obj(amount=None), "application/json", 400, {"amount": "required"}),
    ("object amount", obj(amount={"value": 1}), "application/json", 400, {"amount": "number"}),
    ("10k-char customer id", obj(customer_id="C" * 10_000), "application/json", 400, {"customer_id": "1-64"}),
    ("10k-char terminal id", obj(terminal_id="T" * 10_000), "application/json", 400, {"terminal_id": "1-64"}),
    ("10k-char transaction id", obj(transaction_id="x" * 10_000), "application/json", 400,
     {"transaction_id": "1-64"}),
    ("transaction id with a slash", obj(transaction_id="../etc/passwd"), "application/json", 400,
     {"transaction_id": "letters"}),
    ("transaction id with a quote", obj(transaction_id="1' OR '1'='1"), "application/json", 400,
     {"transaction_id": "letters"}),
    ("empty customer id", obj(customer_id=""), "application/json", 400, {"customer_id": "1-64"}),
    ("numeric customer id", obj(customer_id=42), "application/json", 400, {"customer_id": "string"}),
    ("10k-char unknown field", obj(**{"z" * 10_000: 1}), "application/json", 400, {"z" * 61 + "...": "unknown"}),
    ("deeply nested array", nested(20_000), "application/json", 400, {"body": "nested too deeply"}),
    ("deeply nested object", ('{"customer_id": ' + '{"a": ' * 5000 + "1" + "}" * 5000 + "}").encode(),
     "application/json", 400, {"body": "nested too deeply"}),
    ("moderately nested value", nested(50), "application/json", 400, {"customer_id": "string"}),
    ("duplicate keys", b'{"customer_id": "C", "terminal_id": "T", "amount": 1, "amount": 999999}',
     "application/json", 400, {"body": "duplicate key 'amount'"}),
    ("duplicate nested keys", b'{"customer_id": "C", "terminal_id": "T", "amount": 1, "x": {"a": 1, "a": 2}}',
     "application/json", 400, {"body": "duplicate key 'a'"}),
    ("timestamp without offset", obj(timestamp="2026-11-23T10:00:00"), "application/json", 400,
     {"timestamp": "offset"}),
    ("date only", obj(timestamp="2026-11-23"), "application/json", 400, {"timestamp": "offset"}),
    ("timestamp far in the future", obj(timestamp="2999-01-01T00:00:00Z"), "application/json", 400,
     {"timestamp": "future"}),
    ("timestamp two days ahead", obj(timestamp=time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                             time.gmtime(time.time() + 2 * 86400))),
     "application/json", 400, {"timestamp": "future"}),
    ("timestamp before 2000", obj(timestamp="1999-12-31T23:59:59Z"), "application/json", 400,
     {"timestamp": "2000"}),
    ("back-dated past the real-time window", obj(timestamp="2026-01-01T00:00:00Z"), "application/json", 400,
     {"timestamp": "hours old"}),
    ("timestamp garbage", obj(timestamp="yesterday"), "application/json", 400, {"timestamp": "ISO-8601"}),
    ("timestamp as a number", obj(timestamp=1763892000), "application/json", 400, {"timestamp": "string"}),
    ("timestamp too long", obj(timestamp="2026-11-23T10:00:00." + "1" * 40 + "Z"), "application/json", 400,
     {"timestamp": "too long"}),
    ("text/plain", json.dumps(VALID).encode(), "text/plain", 415, {"body": "content type"}),
    ("form encoded", b"customer_id=C&terminal_id=T&amount=1", "application/x-www-form-urlencoded", 415,
     {"body": "content type"}),
    ("xml", b"<tx/>", "application/xml", 415, {"body": "content type"}),
    ("just over 64 KiB", obj(customer_id="C", padding=" " * 65_536), "application/json", 413, {"body": "limit"}),
    ("10 MB body", b'{"customer_id": "' + b"C" * (10 * MiB) + b'"}', "application/json", 413,
     {"body": "limit"}),
    ("every problem at once", json.dumps({"amount": "x", "customer_id": "", "transaction_id": "a/b",
                                          "timestamp": "2026-11-23T10:00:00", "extra": 1}).encode(),
     "application/json", 400, {"amount": "number", "customer_id": "1-64", "transaction_id": "letters",
                               "timestamp": "offset", "terminal_id": "required", "extra": "unknown"}),
]


def assert_refused(response, status: int, expected: dict[str, str]) -> None:
    """The status, and for each field its problem named with the expected words."""
    assert response.status_code == status, response.text[:300]
    found = problems(response)
    for field, words in expected.items():
        assert field in found, (field, found)
        assert words.lower() in found[field].lower(), (field, found[field])


@pytest.mark.parametrize("body,content_type,status,expected", [case[1:] for case in PREDICT_CASES],
                         ids=[case[0] for case in PREDICT_CASES])
def test_predict_refuses_bad_input_naming_the_field(served, body, content_type, status, expected):
    host, _ = served
    assert_refused(post(host, "/api/predict", body, content_type), status, expected)


def label_body(items) -> bytes:
    return json.dumps({"labels": items}).encode()


LABEL_CASES = [
    ("empty body", b"", "application/json", 400, {"body": "empty"}),
    ("invalid utf-8", b'{"labels": [{"transaction_id": "\xc3\x28", "is_fraud": true}]}', "application/json", 400,
     {"body": "UTF-8"}),
    ("array", b'[{"transaction_id": "t1", "is_fraud": true}]', "application/json", 400, {"body": "JSON object"}),
    ("no labels", b"{}", "application/json", 400, {"labels": "non-empty array"}),
    ("empty labels", label_body([]), "application/json", 400, {"labels": "non-empty array"}),
    ("labels not a list", b'{"labels": {"transaction_id": "t1", "is_fraud": true}}', "application/json", 400,
     {"labels": "non-empty array"}),
    ("5001 labels", label_body([{"transaction_id": f"t{i}", "is_fraud": False} for i in range(5001)]),
     "application/json", 400, {"labels": "at most 5000"}),
    ("label not an object", label_body(["t1"]), "application/json", 400, {"labels[0]": "object"}),
    ("string is_fraud", label_body([{"transaction_id": "t1", "is_fraud": "yes"}]), "application/json", 400,
     {"labels[0].is_fraud": "true or false"}),
    ("numeric is_fraud", label_body([{"transaction_id": "t1", "is_fraud": 1}]), "application/json", 400,
     {"labels[0].is_fraud": "true or false"}),
    ("missing transaction id", label_body([{"is_fraud": True}]), "application/json", 400,
     {"labels[0].transaction_id": "required"}),
    ("10k-char transaction id", label_body([{"transaction_id": "t" * 10_000, "is_fraud": True}]),
     "application/json", 400, {"labels[0].transaction_id": "1-64"}),
    ("unknown label field", label_body([{"transaction_id": "t1", "is_fraud": True, "note": "x"}]),
     "application/json", 400, {"labels[0].note": "unknown"}),
    ("second item bad", label_body([{"transaction_id": "t1", "is_fraud": True},
                                    {"transaction_id": "t 2", "is_fraud": None}]), "application/json", 400,
     {"labels[1].transaction_id": "letters", "labels[1].is_fraud": "true or false"}),
    ("NaN", b'{"labels": [{"transaction_id": "t1", "is_fraud": NaN}]}', "application/json", 400, {"body": "NaN"}),
    ("duplicate keys", b'{"labels": [{"transaction_id": "t1", "is_fraud": true, "is_fraud": false}]}',
     "application/json", 400, {"body": "duplicate key 'is_fraud'"}),
    ("deeply nested", ('{"labels": ' + "[" * 100_000 + "]" * 100_000 + "}").encode(), "application/json", 400,
     {"body": "nested too deeply"}),
    ("text/plain", label_body([{"transaction_id": "t1", "is_fraud": True}]), "text/plain", 415,
     {"body": "content type"}),
    ("over 1 MiB", label_body([{"transaction_id": "t1", "is_fraud": True}]) + b" " * MiB, "application/json", 413,
     {"body": "limit"}),
    ("10 MB body", b'{"labels": "' + b"x" * (10 * MiB) + b'"}', "application/json", 413, {"body": "limit"}),
]


@pytest.mark.parametrize("body,content_type,status,expected", [case[1:] for case in LABEL_CASES],
                         ids=[case[0] for case in LABEL_CASES])
def test_labels_refuses_bad_input_naming_the_field(served, body, content_type, status, expected):
    host, _ = served
    assert_refused(post(host, "/api/labels", body, content_type), status, expected)


def test_good_requests_still_served_and_refused_ones_never_stored(served):
    """Edge values that are valid are accepted; none of the refused requests above reached the database."""
    from shared.operations import table_counts
    from shared.storage.schema import transactions

    host, services = served
    accepted = {
        "at-zero": {**VALID, "transaction_id": "edge-zero", "amount": 0},
        "at-limit": {**VALID, "transaction_id": "edge-limit", "amount": 1_000_000},
        "ids-64": {**VALID, "transaction_id": "e" * 64, "customer_id": "c" * 64, "terminal_id": "t" * 64},
        "unicode": {**VALID, "transaction_id": "edge-unicode", "customer_id": "Ünïcødé 客户 🙂"},
        # Ten minutes ago, written in UTC+14: the offset is honoured (and the instant is recent).
        "offset": {**VALID, "transaction_id": "edge-offset", "timestamp": (
            datetime.now(timezone(timedelta(hours=14))) - timedelta(minutes=10)).isoformat()},
        "nulls": {**VALID, "transaction_id": None, "timestamp": None},
    }
    answered = set()
    for name, body in accepted.items():
        response = post(host, "/api/predict", json.dumps(body).encode())
        assert response.status_code == 200, (name, response.text)
        answered.add(response.json()["transaction_id"])
    # No content type at all is read as JSON (what most HTTP clients send with a JSON body).
    response = post(host, "/api/predict", json.dumps({**VALID, "transaction_id": "edge-no-ct"}).encode(), None)
    assert response.status_code == 200
    answered.add("edge-no-ct")
    labels = post(host, "/api/labels", label_body([{"transaction_id": "edge-zero", "is_fraud": True}]))
    assert labels.status_code == 200 and labels.json() == {"received": 1, "stored": 1}

    deadline = time.monotonic() + 20
    while table_counts(services)["transactions"] < len(answered) and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(0.5)  # anything stray would have arrived by now too
    import sqlalchemy as sa

    with services.engine.connect() as conn:
        stored = set(conn.execute(sa.select(transactions.c.transaction_id)).scalars())
    assert stored == answered  # every accepted one once, nothing from a refused request
    assert services.poison_queue.client.get_queue_properties().approximate_message_count == 0


# --- once bugs (found by fuzzing), now regression tests --------------------------------------------

@pytest.mark.parametrize("stamp", ["9999-12-31T23:59:59-14:00", "0001-01-01T00:00:00+14:00"])
def test_timestamp_out_of_datetime_range_is_400(served, stamp):
    host, _ = served
    response = requests.post(f"{host.base_url}/api/predict", json={**VALID, "timestamp": stamp}, timeout=30)
    assert response.status_code == 400 and "timestamp" in problems(response)


def test_unpaired_surrogate_in_customer_id_is_400(served):
    host, _ = served
    body = b'{"customer_id": "C\\ud800", "terminal_id": "T", "amount": 1}'
    response = requests.post(f"{host.base_url}/api/predict", data=body,
                             headers={"Content-Type": "application/json"}, timeout=30)
    assert response.status_code == 400 and "customer_id" in problems(response)


def test_transaction_id_with_trailing_newline_is_400(served):
    host, _ = served
    response = requests.post(f"{host.base_url}/api/predict", json={**VALID, "transaction_id": "abc\n"}, timeout=30)
    assert response.status_code == 400 and "transaction_id" in problems(response)
