"""What the serving process caches from storage: the promoted model (loaded once, refreshed
now and then, never replaced by a version that fails verification) and the operator rules."""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from .errors import ModelUnavailable
from .model import ArtifactRejected, LoadedModel
from .rules import Rule, RuleSet
from .storage.blob import ModelStore

log = logging.getLogger(__name__)


class ModelCache:
    """The promoted model, loaded once per process and refreshed at most every
    ``refresh_seconds``. If storage is unreachable, or a new version fails
    verification, it keeps serving the last good model."""

    RETRY_WHILE_EMPTY_SECONDS = 1.0
    REFRESH_WAIT_SECONDS = 1.0

    def __init__(self, store: ModelStore, refresh_seconds: float, clock=time.monotonic):
        self._store = store
        self._refresh_seconds = refresh_seconds
        self._clock = clock
        self._model: LoadedModel | None = None
        self._checked_at: float | None = None
        self._rejected: set[str] = set()
        self._refreshing = threading.Lock()

    def get(self) -> LoadedModel:
        if self._model is None:
            # No model yet: wait for the load in flight instead of failing with 503.
            with self._refreshing:
                if self._model is None and self._due():
                    self._refresh()
        elif self._due() and self._refreshing.acquire(blocking=False):
            # A model is serving: the check for a newer one runs beside the request, which waits
            # at most REFRESH_WAIT_SECONDS for it; slow or silent blob storage delays no request
            # by more (the old model keeps serving and the check finishes in the background).
            self._checked_at = self._clock()
            done = threading.Event()
            threading.Thread(target=self._refresh_in_background, args=(done,), name="model-refresh",
                             daemon=True).start()
            done.wait(self.REFRESH_WAIT_SECONDS)
        if self._model is None:
            raise ModelUnavailable(
                "no model is available yet: publish one with `python -m shared.cli init` or wait for retraining"
            )
        return self._model

    def _due(self) -> bool:
        if self._checked_at is None:
            return True
        interval = self._refresh_seconds if self._model else self.RETRY_WHILE_EMPTY_SECONDS
        return self._clock() - self._checked_at >= interval

    def _refresh_in_background(self, done: threading.Event) -> None:
        try:
            self._refresh()
        finally:
            self._refreshing.release()
            done.set()

    def _refresh(self) -> None:
        self._checked_at = self._clock()
        current = self._model.version if self._model else None
        try:
            version = self._store.current_version()
        except Exception as exc:
            log.warning("model pointer unreadable (%s); serving %s", type(exc).__name__, current)
            return
        if version is None or version == current or version in self._rejected:
            return
        try:
            self._model = self._store.load(version)
            log.info("model %s loaded (was %s)", version, current)
        except ArtifactRejected as exc:
            self._rejected.add(version)
            log.error("model %s REFUSED: %s; serving %s", version, exc, current)
        except Exception as exc:
            log.warning("model %s could not be loaded (%s); serving %s", version, type(exc).__name__, current)


class RuleCache:
    """The operator rules, re-read every ``refresh_seconds`` in the background: a request never
    waits on the database for them (except up to ``first_wait`` seconds for the very first
    read). If the database cannot be read, the last rules read keep applying (none before the
    first read: rules narrow what the model decides, so their absence never blocks scoring)."""

    def __init__(self, load: Callable[[], list[Rule]], refresh_seconds: float, first_wait: float = 0.25,
                 clock: Callable[[], float] = time.monotonic):
        self._load = load
        self._refresh_seconds = refresh_seconds
        self._first_wait = first_wait
        self._clock = clock
        self._rules = RuleSet.from_rules([])
        self._started_at: float | None = None
        self._loaded = threading.Event()
        self._refreshing = threading.Lock()

    def get(self) -> RuleSet:
        if self._started_at is None or self._clock() - self._started_at >= self._refresh_seconds:
            if self._refreshing.acquire(blocking=False):
                self._started_at = self._clock()
                threading.Thread(target=self._refresh, name="rules-refresh", daemon=True).start()
            if not self._loaded.is_set():
                self._loaded.wait(self._first_wait)
        return self._rules

    def _refresh(self) -> None:
        try:
            self._rules = RuleSet.from_rules(self._load())
        except Exception as exc:  # keep the last rules; scoring goes on
            log.warning("rules unreadable (%s); applying the %d rules read before", type(exc).__name__,
                        len(self._rules))
        finally:
            self._loaded.set()
            self._refreshing.release()
