"""Session fixtures: real Azurite and PostgreSQL, started by the tests themselves.

Locally a service that cannot start makes its tests skip with the reason; in CI
(CI=true) it fails the run instead, so these tests can never silently skip there.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

from harness.servers import ServiceUnavailable, in_ci, start_azurite, start_postgres


def _unavailable(what: str, exc: Exception):
    message = f"{what} unavailable: {exc}"
    if in_ci():
        pytest.fail(message + " (CI=true: this test must run, not skip)")
    pytest.skip(message)


@pytest.fixture(scope="session")
def azurite(tmp_path_factory):
    """A running Azurite (blob + queue) for the whole session."""
    try:
        server = start_azurite(tmp_path_factory.mktemp("azurite"))
    except ServiceUnavailable as exc:
        _unavailable("Azurite", exc)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def postgres_url():
    """URL of a real PostgreSQL server: TEST_POSTGRES_URL, or one started from Debian's binaries."""
    given = os.environ.get("TEST_POSTGRES_URL")
    if given:
        yield given
        return
    try:
        server = start_postgres()
    except ServiceUnavailable as exc:
        _unavailable("PostgreSQL", exc)
    yield server.url
    server.stop()


# --- the app under test -------------------------------------------------------------------

import uuid

from harness.app import ModelFactory, configure_app


@pytest.fixture(scope="session")
def model_factory():
    """Trains one small real model per session; publishes it into any test's container."""
    return ModelFactory()


@pytest.fixture
def app_env(azurite, tmp_path, monkeypatch):
    """Environment of a fresh app: own queue, container and SQLite file. Returns the Services."""
    services = configure_app(monkeypatch, azurite.connection_string, f"sqlite:///{tmp_path / 'fraud.db'}",
                             suffix=uuid.uuid4().hex[:10])
    yield services
    from shared.wiring import reset_wiring

    reset_wiring()


@pytest.fixture
def app_with_model(app_env, model_factory):
    """A fresh app whose container holds a promoted, verified model."""
    model_factory.publish(app_env.store)
    return app_env
