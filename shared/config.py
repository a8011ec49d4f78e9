"""The one place that reads configuration: app settings (environment variables).

On Azure these are the Function App's application settings; locally Core Tools
(or the project's dev host) loads them from ``local.settings.json``.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Mapping

# Azurite's well-known development connection string (public, documented by Microsoft).
DEVELOPMENT_STORAGE = "UseDevelopmentStorage=true"
DEFAULT_DATABASE_URL = "sqlite:///fraud.db"


class ConfigurationError(ValueError):
    """A setting is missing or malformed."""


def _int(env: Mapping[str, str], name: str, default: int, minimum: int = 0) -> int:
    raw = env.get(name, "")
    if raw.strip() == "":
        return default
    try:
        value = int(raw)
    except ValueError as exc:
        raise ConfigurationError(f"setting {name} must be an integer, got {raw!r}") from exc
    if value < minimum:
        raise ConfigurationError(f"setting {name} must be >= {minimum}, got {value}")
    return value


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name, "")
    if raw.strip() == "":
        return default
    try:
        return float(raw)
    except ValueError as exc:
        raise ConfigurationError(f"setting {name} must be a number, got {raw!r}") from exc


@dataclass(frozen=True)
class Settings:
    """All settings of the service, with their defaults (documented in README.md)."""

    storage_connection: str = DEVELOPMENT_STORAGE
    # Identity-based storage (no key): AzureWebJobsStorage__accountName / __blobServiceUri / __queueServiceUri.
    storage_account_name: str = ""
    blob_service_uri: str = ""
    queue_service_uri: str = ""
    transactions_queue: str = "transactions"
    model_container: str = "models"
    database_url: str = DEFAULT_DATABASE_URL
    sql_connection_string: str = ""
    retrain_threshold: int = 1000
    retrain_schedule: str = "0 0 */6 * * *"
    model_refresh_seconds: int = 60
    promotion_tolerance: float = 0.005
    threshold_rule: str = "max_f1"
    model_signing_key: str = field(default="", repr=False)
    min_training_rows: int = 200
    history_timeout_ms: int = 250
    # Budget of one predict call's enqueue (waiting for the queue to accept its message): past it, 503.
    enqueue_timeout_ms: int = 5000

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "Settings":
        """Read settings from the environment (or the given mapping)."""
        env = os.environ if env is None else env
        return cls(
            storage_connection=env.get("AzureWebJobsStorage", "").strip() or (
                "" if env.get("AzureWebJobsStorage__accountName") or env.get("AzureWebJobsStorage__blobServiceUri")
                else DEVELOPMENT_STORAGE
            ),
            storage_account_name=env.get("AzureWebJobsStorage__accountName", "").strip(),
            blob_service_uri=env.get("AzureWebJobsStorage__blobServiceUri", "").strip(),
            queue_service_uri=env.get("AzureWebJobsStorage__queueServiceUri", "").strip(),
            transactions_queue=env.get("TRANSACTIONS_QUEUE", "").strip() or "transactions",
            model_container=env.get("MODEL_CONTAINER", "").strip() or "models",
            database_url=env.get("DATABASE_URL", "").strip() or DEFAULT_DATABASE_URL,
            sql_connection_string=env.get("SQL_CONNECTION_STRING", "").strip(),
            retrain_threshold=_int(env, "RETRAIN_THRESHOLD", 1000, minimum=1),
            retrain_schedule=env.get("RETRAIN_SCHEDULE", "").strip() or "0 0 */6 * * *",
            model_refresh_seconds=_int(env, "MODEL_REFRESH_SECONDS", 60),
            promotion_tolerance=_float(env, "PROMOTION_TOLERANCE", 0.005),
            threshold_rule=env.get("THRESHOLD_RULE", "").strip() or "max_f1",
            model_signing_key=env.get("MODEL_SIGNING_KEY", ""),
            min_training_rows=_int(env, "MIN_TRAINING_ROWS", 200, minimum=10),
            history_timeout_ms=_int(env, "HISTORY_TIMEOUT_MS", 250, minimum=1),
            enqueue_timeout_ms=_int(env, "ENQUEUE_TIMEOUT_MS", 5000, minimum=1),
        )

    @property
    def poison_queue(self) -> str:
        """The queue the Functions host moves failing messages to after maxDequeueCount."""
        return f"{self.transactions_queue}-poison"
