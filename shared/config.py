"""The one place that reads configuration: app settings (environment variables).

On Azure these are the Function App's application settings; locally Core Tools
(or the project's dev host) loads them from ``local.settings.json``.
"""
from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .decisions import CostModel

# Azurite's well-known development connection string (public, documented by Microsoft).
DEVELOPMENT_STORAGE = "UseDevelopmentStorage=true"
DEFAULT_DATABASE_URL = "sqlite:///fraud.db"
# The project root: where local.settings.json lives and where `make run` runs the host.
PROJECT_ROOT = Path(__file__).resolve().parents[1]
LOCAL_SETTINGS_FILE = "local.settings.json"
# Names another settings file for the operator CLI (tests, a second checkout).
LOCAL_SETTINGS_ENV = "LOCAL_SETTINGS_FILE"


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


def _float(env: Mapping[str, str], name: str, default: float, low: float = -math.inf,
           high: float = math.inf) -> float:
    raw = env.get(name, "")
    if raw.strip() == "":
        return default
    try:
        value = float(raw)
    except ValueError as exc:
        raise ConfigurationError(f"setting {name} must be a number, got {raw!r}") from exc
    if not low <= value <= high:
        raise ConfigurationError(f"setting {name} must be between {low} and {high}, got {value}")
    return value


def _choice(env: Mapping[str, str], name: str, default: str, allowed: tuple[str, ...]) -> str:
    value = env.get(name, "").strip() or default
    if value not in allowed:
        raise ConfigurationError(f"setting {name} must be one of {', '.join(allowed)}, got {value!r}")
    return value


def _fraud_loss(env: Mapping[str, str]) -> str:
    """FRAUD_LOSS: ``amount`` (an approved fraud loses its amount) or a fixed loss per fraud."""
    value = env.get("FRAUD_LOSS", "").strip() or "amount"
    if value != "amount":
        _float({"FRAUD_LOSS": value}, "FRAUD_LOSS", 0.0, low=0.0)
    return value


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
    promotion_tolerance: float = 0.01
    threshold_rule: str = "max_f1"
    model_signing_key: str = field(default="", repr=False)
    min_training_rows: int = 200
    history_timeout_ms: int = 250
    predict_max_age_hours: int = 24
    # Training: a bounded sample of the recent labeled population (issue: scale).
    training_window_days: int = 90
    training_max_rows: int = 400_000
    unlabeled_as_genuine_after_days: int = 0
    training_database_url: str = field(default="", repr=False)
    training_sql_connection_string: str = field(default="", repr=False)
    # The champion/challenger gate.
    gate_min_frauds: int = 30
    gate_confidence: float = 0.9
    guard_tolerance: float = 0.02
    label_maturity_days: int = 14
    guard_max_rows: int = 20_000
    label_orphan_days: int = 7
    # Decisions: approve / review / decline by expected cost, or one cut (THRESHOLD_RULE).
    decision_policy: str = "cost"
    review_cost: float = 5.0
    decline_cost: float = 25.0
    fraud_loss: str = "amount"
    # Budget of one predict call's enqueue (waiting for the queue to accept its message): past it, 503.
    enqueue_timeout_ms: int = 5000
    # Monitoring: drift of live traffic vs the serving model's holdout (PSI), and the console's reads.
    drift_retrain_psi: float = 0.25  # 0: drift never triggers a retrain
    drift_window_hours: int = 168
    drift_sample_rows: int = 2000
    monitoring_timeout_ms: int = 5000
    # Custom metrics to Application Insights when set (nothing is sent otherwise).
    applicationinsights_connection_string: str = field(default="", repr=False)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
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
            promotion_tolerance=_float(env, "PROMOTION_TOLERANCE", 0.01, low=0.0, high=1.0),
            threshold_rule=env.get("THRESHOLD_RULE", "").strip() or "max_f1",
            model_signing_key=env.get("MODEL_SIGNING_KEY", ""),
            min_training_rows=_int(env, "MIN_TRAINING_ROWS", 200, minimum=10),
            history_timeout_ms=_int(env, "HISTORY_TIMEOUT_MS", 250, minimum=1),
            predict_max_age_hours=_int(env, "PREDICT_MAX_AGE_HOURS", 24, minimum=1),
            training_window_days=_int(env, "TRAINING_WINDOW_DAYS", 90, minimum=1),
            training_max_rows=_int(env, "TRAINING_MAX_ROWS", 400_000, minimum=1000),
            unlabeled_as_genuine_after_days=_int(env, "UNLABELED_AS_GENUINE_AFTER_DAYS", 0),
            training_database_url=env.get("TRAINING_DATABASE_URL", "").strip(),
            training_sql_connection_string=env.get("TRAINING_SQL_CONNECTION_STRING", "").strip(),
            gate_min_frauds=_int(env, "GATE_MIN_FRAUDS", 30, minimum=1),
            gate_confidence=_float(env, "GATE_CONFIDENCE", 0.9, low=0.5, high=0.999),
            guard_tolerance=_float(env, "GUARD_TOLERANCE", 0.02, low=0.0, high=1.0),
            label_maturity_days=_int(env, "LABEL_MATURITY_DAYS", 14),
            guard_max_rows=_int(env, "GUARD_MAX_ROWS", 20_000, minimum=100),
            label_orphan_days=_int(env, "LABEL_ORPHAN_DAYS", 7, minimum=1),
            decision_policy=_choice(env, "DECISION_POLICY", "cost", ("cost", "threshold")),
            review_cost=_float(env, "REVIEW_COST", 5.0, low=0.0),
            decline_cost=_float(env, "DECLINE_COST", 25.0, low=0.0),
            fraud_loss=_fraud_loss(env),
            enqueue_timeout_ms=_int(env, "ENQUEUE_TIMEOUT_MS", 5000, minimum=1),
            drift_retrain_psi=_float(env, "DRIFT_RETRAIN_PSI", 0.25, low=0.0, high=100.0),
            drift_window_hours=_int(env, "DRIFT_WINDOW_HOURS", 168, minimum=1),
            drift_sample_rows=_int(env, "DRIFT_SAMPLE_ROWS", 2000, minimum=500),
            monitoring_timeout_ms=_int(env, "MONITORING_TIMEOUT_MS", 5000, minimum=100),
            applicationinsights_connection_string=env.get("APPLICATIONINSIGHTS_CONNECTION_STRING", "").strip(),
        )

    @property
    def predict_max_age(self) -> timedelta:
        """How old a transaction's timestamp may be when it is scored."""
        return timedelta(hours=self.predict_max_age_hours)

    @property
    def costs(self) -> CostModel:
        """The economics decision bands are chosen by (REVIEW_COST, DECLINE_COST, FRAUD_LOSS)."""
        from .decisions import CostModel

        if self.fraud_loss == "amount":
            return CostModel(review_cost=self.review_cost, decline_cost=self.decline_cost, fraud_loss="amount")
        return CostModel(review_cost=self.review_cost, decline_cost=self.decline_cost,
                         fraud_loss=float(self.fraud_loss))

    @property
    def poison_queue(self) -> str:
        """The queue the Functions host moves failing messages to after maxDequeueCount."""
        return f"{self.transactions_queue}-poison"


def load_local_settings(path: str | os.PathLike | None = None,
                        environ: MutableMapping[str, str] | None = None) -> list[str]:
    """Export ``local.settings.json``'s ``Values`` into the environment, as Core Tools does for
    the host: a name already set in the real environment wins. For the operator CLI, so README
    commands see the settings `make run` serves with; the function app never calls it.

    The file is ``path``, else ``$LOCAL_SETTINGS_FILE``, else the project root's; a default
    file that does not exist is no error (there are only real app settings, as on Azure). A
    relative SQLite ``DATABASE_URL`` from the file is made absolute against the file's folder
    (the project root, where `make run` runs the host), whatever the current directory.
    Returns the names it set.
    """
    environ = os.environ if environ is None else environ
    explicit = path if path is not None else environ.get(LOCAL_SETTINGS_ENV) or None
    file = Path(explicit) if explicit else PROJECT_ROOT / LOCAL_SETTINGS_FILE
    if not file.is_file():
        if explicit:
            raise ConfigurationError(f"settings file {file} does not exist")
        return []
    try:
        data = json.loads(file.read_text(encoding="utf-8-sig"))
    except (OSError, ValueError) as exc:
        raise ConfigurationError(f"cannot read {file}: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("Values") or {}, dict):
        raise ConfigurationError(f"{file} must hold a JSON object with a \"Values\" object")
    if data.get("IsEncrypted") is True:
        raise ConfigurationError(f"{file} is encrypted (IsEncrypted: true); only plain-text settings can be read")
    added = []
    for name, value in (data.get("Values") or {}).items():
        if name in environ:
            continue
        text = _setting_text(value)
        if name == "DATABASE_URL":
            text = absolute_sqlite_url(text, file.resolve().parent)
        environ[name] = text
        added.append(name)
    return added


def _setting_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def absolute_sqlite_url(url: str, base: Path) -> str:
    """``sqlite:///relative/path.db`` → ``sqlite:////<base>/relative/path.db``; anything else unchanged."""
    prefix = "sqlite:///"
    if not url.startswith(prefix) or url.startswith(prefix + "/"):
        return url
    path, sep, query = url[len(prefix):].partition("?")
    if path in ("", ":memory:") or path.startswith("file:"):
        return url
    return prefix + str(base / path) + sep + query
