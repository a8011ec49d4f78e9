"""PredictClient: 503s and lost connections are retried with the same transaction_id,
waiting what the service asks for (Retry-After), within bounds."""
import pytest
import requests

from shared import client as client_module
from shared.client import PredictClient


class FakeResponse:
    def __init__(self, status: int, retry_after: str | None = None):
        self.status_code = status
        self.headers = {"Retry-After": retry_after} if retry_after is not None else {}


class FakeSession:
    """Answers from a script: a FakeResponse, or an exception to raise."""

    def __init__(self, *script):
        self.script = list(script)
        self.headers = {}
        self.bodies = []

    def post(self, url, json=None, timeout=None):
        self.bodies.append(json)
        step = self.script.pop(0)
        if isinstance(step, Exception):
            raise step
        return step


@pytest.fixture
def sleeps(monkeypatch):
    waited = []
    monkeypatch.setattr(client_module.time, "sleep", waited.append)
    return waited


def test_503_waits_as_long_as_retry_after_says(sleeps):
    session = FakeSession(FakeResponse(503, "3"), FakeResponse(503, "1"), FakeResponse(200))
    response = PredictClient("http://x", session=session).predict({"transaction_id": "t1"})
    assert response.status_code == 200
    assert sleeps == [3.0, 1.0]
    assert session.bodies == [{"transaction_id": "t1"}] * 3  # the same id every time


def test_retry_after_is_bounded_and_falls_back_to_backoff_when_absent_or_unreadable(sleeps):
    session = FakeSession(FakeResponse(503, "86400"), FakeResponse(503), FakeResponse(503, "soon"),
                          FakeResponse(200))
    PredictClient("http://x", session=session).predict({"transaction_id": "t"}, backoff=0.5, max_wait=10)
    assert sleeps == [10.0, 1.0, 2.0]


def test_connection_errors_and_timeouts_are_retried_then_raised(sleeps):
    session = FakeSession(requests.ConnectionError("refused"), requests.ReadTimeout("slow"), FakeResponse(200))
    assert PredictClient("http://x", session=session).predict({"transaction_id": "t"}).status_code == 200
    assert len(sleeps) == 2
    session = FakeSession(*[requests.ConnectTimeout("x")] * 3)
    with pytest.raises(requests.ConnectTimeout):
        PredictClient("http://x", session=session).predict({"transaction_id": "t"}, retries=2)


def test_last_503_is_returned_after_the_retries(sleeps):
    session = FakeSession(*[FakeResponse(503, "1")] * 3)
    response = PredictClient("http://x", session=session).predict({"transaction_id": "t"}, retries=2)
    assert response.status_code == 503 and sleeps == [1.0, 1.0]


def test_other_statuses_are_not_retried(sleeps):
    session = FakeSession(FakeResponse(400), FakeResponse(200))
    assert PredictClient("http://x", session=session).predict({"transaction_id": "t"}).status_code == 400
    assert sleeps == []


def test_retry_after_forms():
    from datetime import datetime, timedelta, timezone
    from email.utils import format_datetime

    from shared.client import retry_after_seconds

    assert retry_after_seconds("5") == 5.0 and retry_after_seconds(None) is None
    assert retry_after_seconds("nan") is None and retry_after_seconds("later") is None
    in_a_minute = format_datetime(datetime.now(timezone.utc) + timedelta(seconds=60), usegmt=True)
    assert 55 < retry_after_seconds(in_a_minute) <= 60
