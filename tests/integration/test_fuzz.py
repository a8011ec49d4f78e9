"""The OpenAPI description: valid, in agreement with shared/schema.py, and fuzzed over HTTP.

* The served document (GET /api/openapi.json, anonymous) is valid OpenAPI 3.1.
* It agrees with the validators: required fields, limits and patterns are the
  constants of shared/schema.py, and on generated bodies a JSON Schema validator
  built from the document accepts exactly what validate_transaction/validate_labels
  accept, naming the same fields.
* Schemathesis generates requests from the served document (valid and invalid
  ones) and sends them to the real function folders served by the dev host on
  127.0.0.1 (real Azurite, a temporary SQLite file, a published model, function
  keys required): no 5xx, every 4xx body names its fields, every response
  conforms to the document, and every transaction answered 200 is stored once.
"""
from __future__ import annotations

import json
import secrets
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import jsonschema
import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared import schema as validators
from shared.storage.schema import transactions as transactions_table

# Schemathesis' negative mode uses `random` inside strategies; hypothesis warns about it.
pytestmark = pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisDeprecationWarning")

ROOT = Path(__file__).resolve().parents[2]
SPEC = json.loads((ROOT / "openapi.json").read_text(encoding="utf-8"))
FUNCTION_KEY = "fuzz-key-" + secrets.token_hex(12)

# Bounded so the whole file stays well under a minute on 2 cores.
POSITIVE_EXAMPLES = 60
NEGATIVE_EXAMPLES = 120


# --- the served app -------------------------------------------------------------------------

@pytest.fixture
def served(azurite, model_factory, tmp_path, monkeypatch):
    """The real function folders under the dev host on 127.0.0.1, keys required, a model published."""
    from devhost import FunctionHost
    from harness.app import configure_app
    from shared.wiring import reset_wiring

    services = configure_app(monkeypatch, azurite.connection_string, f"sqlite:///{tmp_path / 'fraud.db'}",
                             suffix=uuid.uuid4().hex[:10], MODEL_REFRESH_SECONDS="600")
    model_factory.publish(services.store)
    host_settings = {"AzureWebJobs.retrain_function.Disabled": "true",
                     "DEVHOST_REQUIRE_KEYS": "true", "DEVHOST_FUNCTION_KEY": FUNCTION_KEY}
    try:
        with FunctionHost(ROOT, settings=host_settings, port=0) as host:
            yield host, services
    finally:
        reset_wiring()


# --- the document itself --------------------------------------------------------------------

def test_served_document_is_valid_openapi_and_is_the_file(served):
    from openapi_spec_validator import validate

    host, _ = served
    reply = requests.get(f"{host.base_url}/api/openapi.json", timeout=10)  # anonymous: no key sent
    assert reply.status_code == 200
    assert reply.headers["Content-Type"].startswith("application/json")
    assert reply.json() == SPEC
    validate(reply.json())  # raises OpenAPIValidationError when invalid
    # The other operations need the key (401 from the host, before any function runs).
    assert requests.post(f"{host.base_url}/api/predict", json={}, timeout=10).status_code == 401


def _component(name: str) -> dict:
    return SPEC["components"]["schemas"][name]


def test_document_states_the_validators_limits():
    tx = _component("TransactionRequest")
    assert set(tx["properties"]) == set(validators.TRANSACTION_FIELDS)
    assert tx["additionalProperties"] is False
    assert set(tx["required"]) == {"customer_id", "terminal_id", "amount"}
    props = tx["properties"]
    assert props["transaction_id"]["pattern"] == validators.ID_PATTERN.pattern
    assert _component("Identifier")["pattern"] == validators.ID_PATTERN.pattern
    for name in ("customer_id", "terminal_id"):
        assert props[name]["pattern"] == validators.TEXT_ID_PATTERN.pattern
    for name in ("transaction_id", "customer_id", "terminal_id"):
        assert (props[name]["minLength"], props[name]["maxLength"]) == (1, 64)
    assert (props["amount"]["minimum"], props["amount"]["maximum"]) == (0, validators.MAX_AMOUNT)
    assert props["timestamp"]["x-earliest"] == validators.format_timestamp(validators.EARLIEST_TIMESTAMP)
    assert props["timestamp"]["x-max-future-skew-seconds"] == validators.MAX_FUTURE_SKEW.total_seconds()
    assert props["timestamp"]["x-max-age-seconds"] == validators.DEFAULT_MAX_AGE.total_seconds()
    assert props["timestamp"]["maxLength"] == 40
    # Optional fields may be null (treated as absent); required ones may not.
    assert "null" in props["transaction_id"]["type"] and "null" in props["timestamp"]["type"]
    assert props["customer_id"]["type"] == "string" and props["amount"]["type"] == "number"

    labels = _component("LabelsRequest")
    assert labels["required"] == ["labels"] and labels["additionalProperties"] is False
    assert labels["properties"]["source"]["pattern"] == validators.SOURCE_PATTERN.pattern
    assert (labels["properties"]["labels"]["minItems"], labels["properties"]["labels"]["maxItems"]) == \
        (1, validators.MAX_LABELS_PER_REQUEST)
    label = _component("Label")
    assert set(label["required"]) == {"transaction_id", "is_fraud"} and label["additionalProperties"] is False

    paths = SPEC["paths"]
    assert paths["/api/predict"]["post"]["requestBody"]["x-max-body-bytes"] == validators.MAX_REQUEST_BYTES
    assert paths["/api/labels"]["post"]["requestBody"]["x-max-body-bytes"] == validators.MAX_LABEL_REQUEST_BYTES
    for path in ("/api/predict", "/api/labels"):
        responses = paths[path]["post"]["responses"]
        assert {"200", "400", "401", "413", "415"} <= set(responses)
    assert {"409", "503"} <= set(paths["/api/predict"]["post"]["responses"])
    prediction = _component("Prediction")
    assert set(prediction["properties"]["decision"]["enum"]) == set(validators.DECISIONS)
    assert paths["/api/openapi.json"]["get"]["security"] == []
    # The error body: {"error": str, "errors": [{"field", "message"}, ...]} with at least one entry.
    body = _component("ErrorBody")
    assert set(body["required"]) == {"error", "errors"} and body["properties"]["errors"]["minItems"] == 1
    assert set(_component("FieldError")["required"]) == {"field", "message"}


CONSOLE_ACTIONS = ("/api/console/models/promote", "/api/console/models/rollback")


def test_document_states_the_consoles_limits():
    from shared.console import MAX_ACTION_BYTES
    from shared.usecases.model_admin import VERSION_PATTERN

    assert _component("ModelVersionRequest")["properties"]["version"]["pattern"] == VERSION_PATTERN.pattern
    labels = _component("ConsoleLabelsRequest")
    assert labels["additionalProperties"] is False and set(labels["properties"]) == {"labels"}
    assert labels["properties"]["labels"]["maxItems"] == validators.MAX_LABELS_PER_REQUEST
    paths = SPEC["paths"]
    assert paths["/api/console/labels"]["post"]["requestBody"]["x-max-body-bytes"] == validators.MAX_LABEL_REQUEST_BYTES
    for path in CONSOLE_ACTIONS:
        assert paths[path]["post"]["requestBody"]["x-max-body-bytes"] == MAX_ACTION_BYTES
        assert {"200", "400", "401", "409", "413", "415"} <= set(paths[path]["post"]["responses"])
    assert "404" in paths["/api/console/models/promote"]["post"]["responses"]


# --- differential: the document's JSON Schema vs the validators, on generated bodies ---------

def _validator_for(name: str) -> jsonschema.Draft202012Validator:
    document = {**_component(name), "components": SPEC["components"]}
    # "#/components/..." references resolve inside this combined document.
    checker = jsonschema.Draft202012Validator.FORMAT_CHECKER
    return jsonschema.Draft202012Validator(document, format_checker=checker)


TRANSACTION_SCHEMA = _validator_for("TransactionRequest")
LABELS_SCHEMA = _validator_for("LabelsRequest")
NOW = datetime.now(timezone.utc)


def test_date_time_format_is_really_checked():
    # jsonschema checks "date-time" only when rfc3339-validator is installed (requirements-dev.txt).
    assert not TRANSACTION_SCHEMA.is_valid({"customer_id": "c", "terminal_id": "t", "amount": 1,
                                            "timestamp": "2026-02-30T10:00:00Z"})


def _schema_fields(validator: jsonschema.Draft202012Validator, instance) -> set[str] | None:
    """Fields the document says are wrong (None when the instance is valid), named as the API names them."""
    errors = list(validator.iter_errors(instance))
    if isinstance(instance, dict) and "timestamp" in instance and isinstance(instance["timestamp"], str) \
            and not any(list(e.absolute_path)[:1] == ["timestamp"] for e in errors):
        # Range rules the JSON Schema cannot express, stated as x-earliest / x-max-future-skew-seconds.
        try:
            when = datetime.fromisoformat(instance["timestamp"].replace("Z", "+00:00"))
        except ValueError:
            when = None
        max_age = timedelta(seconds=_component("TransactionRequest")["properties"]["timestamp"]["x-max-age-seconds"])
        if when is not None and not (max(validators.EARLIEST_TIMESTAMP, NOW - max_age) <= when
                                     <= NOW + validators.MAX_FUTURE_SKEW):
            errors.append(jsonschema.ValidationError("out of range", path=["timestamp"]))
    if not errors:
        return None
    fields = set()
    for error in errors:
        path = list(error.absolute_path)
        if error.validator == "required":
            missing = set(error.validator_value) - set(error.instance)
            prefix = _api_field(path)
            fields |= {f"{prefix}.{m}" if prefix else m for m in missing}
        elif error.validator == "additionalProperties":
            prefix = _api_field(path)
            # Unknown names are echoed shortened to 64 characters.
            extra = {e if len(e) <= 64 else e[:61] + "..."
                     for e in set(error.instance) - set(error.schema.get("properties", {}))}
            fields |= {f"{prefix}.{e}" if prefix else e for e in extra}
        else:
            fields.add(_api_field(path) or "body")
    return fields


def _api_field(path: list) -> str:
    """["labels", 3, "is_fraud"] -> "labels[3].is_fraud"."""
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _accepted_fields(function, instance) -> set[str] | None:
    try:
        function(instance)
    except validators.ValidationError as exc:
        return {e.field for e in exc.errors}
    return None


ids = st.from_regex(r"\A[A-Za-z0-9._:-]{1,64}\Z")
texts = st.text(max_size=70)
anything_else = st.one_of(st.none(), st.booleans(), st.integers(-3, 3), st.lists(st.integers(), max_size=2),
                          st.dictionaries(st.text(max_size=3), st.integers(), max_size=1))


def _rfc3339(moment: datetime, offset_minutes: int, digits: int) -> str:
    local = moment.astimezone(timezone(timedelta(minutes=offset_minutes)))
    text = local.strftime("%Y-%m-%dT%H:%M:%S")
    if digits:
        text += "." + f"{local.microsecond:06d}"[:digits]
    if offset_minutes == 0 and digits % 2 == 0:
        return text + "Z"
    sign = "-" if offset_minutes < 0 else "+"
    return text + f"{sign}{abs(offset_minutes) // 60:02d}:{abs(offset_minutes) % 60:02d}"


def _moments(low: datetime, high: datetime):
    return st.builds(_rfc3339, st.datetimes(min_value=low, max_value=high, timezones=st.just(timezone.utc)),
                     st.integers(-14 * 60, 14 * 60), st.integers(0, 6))


good_timestamps = st.one_of(st.none(), _moments(datetime(2000, 1, 2), datetime(2026, 1, 1)))
bad_timestamps = st.one_of(
    _moments(datetime(1990, 1, 1), datetime(1999, 12, 30)),
    _moments(NOW.replace(tzinfo=None) + timedelta(days=2), datetime(2100, 1, 1)),
    st.sampled_from(["2026-11-23T10:00:00", "2026-11-23", "yesterday", "", "2026-13-01T00:00:00Z",
                     "2026-02-30T10:00:00Z", "2026-11-23T10:00:00+25:00",
                     "2026-11-23T10:00:00.123456789012345678901234Z"]),
    texts, st.integers(), st.booleans(), st.lists(st.integers(), max_size=2),
)
good_amounts = st.one_of(st.integers(0, 1_000_000), st.floats(0, 1_000_000),
                         st.sampled_from([0, 0.0, 1_000_000, 1_000_000.0, -0.0]))
bad_amounts = st.one_of(st.integers(-10**30, -1), st.integers(1_000_001, 10**30),
                        st.floats(allow_nan=False, allow_infinity=False).filter(lambda x: not 0 <= x <= 1_000_000),
                        st.sampled_from([1_000_000.0001, -1e-9, "12.5", True, False, None]), st.lists(st.floats()))
bad_ids = st.one_of(st.text(min_size=65, max_size=80), st.just(""), texts.filter(
    lambda t: not validators.ID_PATTERN.fullmatch(t)), st.integers(), st.booleans(), st.lists(st.integers()))


@st.composite
def _object(draw, fields: dict, required: set[str], extra_value, good_odds: int = 15):
    """Mostly valid fields (good_odds in 20), sometimes an invalid, missing or unknown one."""
    body = {}
    for name, (good, bad) in fields.items():
        roll = draw(st.integers(0, 19))
        if roll < good_odds and not (roll == 0 and name not in required):
            body[name] = draw(good)
        elif roll < 19:
            body[name] = draw(bad)
    if draw(st.integers(0, 19)) == 0:
        body[draw(st.text(max_size=70).filter(lambda k: k not in fields))] = draw(extra_value)
    return body


transactions = _object({
    "transaction_id": (ids, bad_ids.filter(lambda v: v is not None)),
    "timestamp": (good_timestamps, bad_timestamps),
    "customer_id": (st.text(min_size=1, max_size=64), st.one_of(st.text(min_size=65, max_size=80), st.just(""),
                                                                 anything_else)),
    "terminal_id": (st.text(min_size=1, max_size=64), st.one_of(st.text(min_size=65, max_size=80), st.just(""),
                                                                 anything_else)),
    "amount": (good_amounts, bad_amounts),
}, {"customer_id", "terminal_id", "amount"}, anything_else)
label_item = _object({"transaction_id": (ids, st.one_of(bad_ids, st.none())),
                      "is_fraud": (st.booleans(), st.one_of(st.none(), st.integers(0, 1), st.text(max_size=5)))},
                     {"transaction_id", "is_fraud"}, anything_else, good_odds=18)
label_items = st.integers(0, 9).flatmap(lambda roll: anything_else if roll == 0 else label_item)
label_lists = _object({"labels": (st.lists(label_items, min_size=1, max_size=3),
                                  st.one_of(st.just([]), anything_else))}, {"labels"}, anything_else, good_odds=17)
label_bodies = st.integers(0, 9).flatmap(lambda roll: anything_else if roll == 0 else label_lists)


@settings(max_examples=400, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(transactions)
def test_document_and_validate_transaction_agree(body):
    expected = _schema_fields(TRANSACTION_SCHEMA, body)
    actual = _accepted_fields(lambda b: validators.validate_transaction(b, now=NOW), body)
    assert actual == expected, body


@settings(max_examples=300, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(label_bodies)
def test_document_and_validate_labels_agree(body):
    expected = _schema_fields(LABELS_SCHEMA, body)
    actual = _accepted_fields(validators.validate_labels, body)
    assert (actual is None) == (expected is None), (body, actual, expected)
    if actual is not None:
        assert actual <= expected | {"labels"}, (body, actual, expected)


def test_label_count_limit_agrees():
    at_limit = {"labels": [{"transaction_id": f"t{i}", "is_fraud": False}
                           for i in range(validators.MAX_LABELS_PER_REQUEST)]}
    over = {"labels": at_limit["labels"] + [{"transaction_id": "one-more", "is_fraud": True}]}
    assert LABELS_SCHEMA.is_valid(at_limit) and validators.validate_labels(at_limit)
    assert not LABELS_SCHEMA.is_valid(over)
    assert _accepted_fields(validators.validate_labels, over) == {"labels"}


# --- fuzzing over HTTP ------------------------------------------------------------------------

RANGE_MESSAGES = ("is too far in the future", "is before 2000-01-01",
                  "is more than 24 hours old; scoring is real time (load history with the import command)")


def _names_the_problem(response: requests.Response) -> str | None:
    """Why a 4xx body fails to name its problem, or None when it does."""
    try:
        body = response.json()
    except ValueError:
        return f"body is not JSON: {response.content[:200]!r}"
    if not isinstance(body, dict) or not isinstance(body.get("error"), str) or not body["error"]:
        return f"no 'error' string: {body!r}"
    errors = body.get("errors")
    if not isinstance(errors, list) or not errors:
        return f"no non-empty 'errors' list: {body!r}"
    for entry in errors:
        if not (isinstance(entry, dict) and isinstance(entry.get("field"), str)
                and isinstance(entry.get("message"), str) and entry["message"]):
            return f"an entry without field/message: {entry!r}"
        if not entry["field"] and entry["message"] != "unknown field":  # a key "" is named as sent
            return f"an entry with an empty field: {entry!r}"
    return None


def _is_range_only_rejection(response: requests.Response) -> bool:
    """A 400 for a timestamp the schema cannot rule out (x-earliest / x-max-future-skew-seconds)."""
    if response.status_code != 400:
        return False
    errors = response.json().get("errors", [])
    return bool(errors) and all(e["field"] == "timestamp" and e["message"] in RANGE_MESSAGES for e in errors)


def test_fuzz_from_the_served_document(served):
    import schemathesis
    from schemathesis import GenerationMode
    from schemathesis.checks import not_a_server_error
    from schemathesis.specs.openapi.checks import (
        content_type_conformance,
        negative_data_rejection,
        response_schema_conformance,
        status_code_conformance,
    )

    host, services = served
    document = schemathesis.openapi.from_url(f"{host.base_url}/api/openapi.json", timeout=10)
    checks = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
    session = requests.Session()
    answered: dict[str, int] = {}
    predicted_ids: set[str] = set()
    started = time.monotonic()

    def exercise(operation, mode: GenerationMode, examples: int) -> None:
        @settings(max_examples=examples, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck))
        # The key is fixed (not generated, not negated): auth is covered by test_security.py.
        @given(operation.as_strategy(generation_mode=mode, headers={"x-functions-key": FUNCTION_KEY}))
        def run(case):
            assert time.monotonic() - started < 240, "fuzzing took too long"
            response = case.call(base_url=host.base_url, session=session, timeout=15)
            key = f"{case.method} {case.path} {mode.value} {response.status_code}"
            answered[key] = answered.get(key, 0) + 1
            assert response.status_code < 500, (case.as_curl_command(), response.status_code, response.text[:300])
            if response.status_code == 409:  # a generated id reused with other content: documented
                if case.path in CONSOLE_ACTIONS:  # a version that fails verification, or nothing to roll back to
                    assert response.json()["message"], response.text
                else:
                    assert case.path == "/api/predict" and response.json()["fields"], response.text
            elif 400 <= response.status_code < 500:
                allowed = (400, 404, 413, 415) if case.path == "/api/console/models/promote" else (400, 413, 415)
                assert response.status_code in allowed, (case.as_curl_command(), response.status_code)
                problem = _names_the_problem(response)
                assert problem is None, (case.as_curl_command(), problem)
            if mode is GenerationMode.POSITIVE and operation.method.upper() == "POST":
                # Valid by the document: accepted, or refused only for the timestamp range it states in words.
                # A well-formed version that does not exist is 404; with one version, nothing to roll back to.
                assert response.status_code in (200, 409) or _is_range_only_rejection(response) or (
                    case.path == "/api/console/models/promote" and response.status_code == 404), \
                    (case.as_curl_command(), response.status_code, response.text[:300])
            case.validate_response(response, checks=checks + ([negative_data_rejection]
                                                              if mode is GenerationMode.NEGATIVE else []))
            if response.status_code == 200 and case.path == "/api/predict":
                predicted_ids.add(response.json()["transaction_id"])

        begun = time.monotonic()
        run()
        timings[f"{operation.method.upper()} {operation.path} {mode.value}"] = round(time.monotonic() - begun, 1)

    timings: dict[str, float] = {}
    for path, method in (("/api/predict", "POST"), ("/api/labels", "POST"), ("/api/openapi.json", "GET"),
                         ("/api/console/monitoring", "GET"), ("/api/console/labels", "POST"),
                         ("/api/console/models/promote", "POST"), ("/api/console/models/rollback", "POST")):
        operation = document[path][method]
        console = path.startswith("/api/console")
        exercise(operation, GenerationMode.POSITIVE, (POSITIVE_EXAMPLES // (3 if console else 1))
                 if method == "POST" else 3)
        if method == "POST":
            exercise(operation, GenerationMode.NEGATIVE, NEGATIVE_EXAMPLES // (3 if console else 1))

    statuses = {key.rsplit(" ", 1)[1] for key in answered}
    print("fuzz responses:", json.dumps(answered, indent=1, sort_keys=True), "seconds:", timings)
    assert "200" in statuses and "400" in statuses, answered
    assert predicted_ids, "no generated transaction was accepted: the positive mode is not exercising predict"

    # Nothing answered 200 is lost: the queue trigger stores each exactly once.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        stored = _stored_ids(services, predicted_ids)
        if stored == predicted_ids:
            break
        time.sleep(0.2)
    assert _stored_ids(services, predicted_ids) == predicted_ids
    assert services.poison_queue.client.get_queue_properties().approximate_message_count == 0


def _stored_ids(services, wanted: set[str]) -> set[str]:
    import sqlalchemy as sa

    column = transactions_table.c.transaction_id
    found: set[str] = set()
    ordered = sorted(wanted)
    with services.engine.connect() as conn:
        for start in range(0, len(ordered), 500):
            rows = conn.execute(sa.select(column, sa.func.count()).where(column.in_(ordered[start:start + 500]))
                                .group_by(column)).all()
            for transaction_id, count in rows:
                assert count == 1, f"{transaction_id} stored {count} times"
                found.add(transaction_id)
    return found
