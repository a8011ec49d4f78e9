"""``FunctionHost``: discovers, loads and runs a function app's HTTP, queue and timer functions.

    from devhost.host import FunctionHost

    with FunctionHost("path/to/app", settings={"AzureWebJobsStorage": conn}, port=0) as host:
        requests.post(f"{host.base_url}/api/score", json={...})

``settings`` stands in for ``local.settings.json`` ``Values`` (omit it to read
the file). Either way values are exported to ``os.environ`` only where the real
environment has no such variable, and removed again by ``stop()``.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path

from .config import DevHostError, apply_settings, http_route_prefix, lookup_setting, read_host_json, read_local_settings
from .functions import FunctionSpec, LoadedFunction, discover_functions, load_function
from .http_trigger import DEFAULT_BODY_LIMIT, HttpFrontend, build_routes
from .queue_trigger import QueueOptions, QueuePoller, queue_service
from .timer_trigger import Schedule, TimerRunner

log = logging.getLogger("devhost")

DEFAULT_PORT = 7071
DEFAULT_POLLING_CAP = 2.0  # seconds; see devhost.queue_trigger


class FunctionHost:
    """A local stand-in for the Functions host serving one app folder (see the package docs)."""

    def __init__(self, app_root: str | os.PathLike, *, settings: Mapping[str, str] | None = None,
                 settings_file: str | os.PathLike | None = None, host: str = "127.0.0.1",
                 port: int | None = DEFAULT_PORT, max_polling_interval: float | None = DEFAULT_POLLING_CAP):
        self.app_root = Path(app_root).resolve()
        self._given_settings = dict(settings) if settings is not None else None
        self._settings_file = Path(settings_file) if settings_file is not None else None
        self.bind_host = host
        self._requested_port = port
        self.max_polling_interval = max_polling_interval
        self.functions: list[LoadedFunction] = []
        self.http: HttpFrontend | None = None
        self.pollers: list[QueuePoller] = []
        self.timers: list[TimerRunner] = []
        self._exported: list[str] = []
        self._started = False

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self) -> FunctionHost:
        """Load everything, then start serving; DevHostError (e.g. PortInUseError) if it cannot."""
        if self._started:
            return self
        if self.http is not None:
            raise RuntimeError("a FunctionHost cannot be started twice; create a new one")
        if self._given_settings is not None:
            values, host_section = self._given_settings, {}
        else:
            local = read_local_settings(self.app_root, self._settings_file)
            if local.path is not None:
                log.info("Settings: %s", local.path)
            values, host_section = local.values, local.host_section
        skipped = [name for name in values if name in os.environ]
        if skipped:
            log.info("Skipping %s from local settings: already set in the environment", ", ".join(sorted(skipped)))
        self._exported = apply_settings(values)
        try:
            self._load(host_section)
        except BaseException:
            self._teardown()
            raise
        self._started = True
        assert self.http is not None  # built by _load
        self.http.start()
        for worker in self.pollers:
            worker.start()
        for timer in self.timers:
            timer.start()
        self._announce()
        return self

    def _load(self, host_section: Mapping) -> None:
        settings = os.environ
        host_json = read_host_json(self.app_root)
        specs, problems = discover_functions(self.app_root, settings, host_json)
        queue_options = QueueOptions.from_host_json(host_json) if _any(specs, "queuetrigger") else None
        port = self._requested_port
        if port is None:
            port = int(host_section.get("LocalHttpPort") or DEFAULT_PORT)
        body_limit = int(lookup_setting("FUNCTIONS_REQUEST_BODY_SIZE_LIMIT", settings) or DEFAULT_BODY_LIMIT)
        if problems:
            raise DevHostError(_problem_report(problems))
        self.http = HttpFrontend([], host=self.bind_host, port=port, settings=settings, body_limit=body_limit)
        for spec in specs:
            try:
                self.functions.append(load_function(spec, self.app_root))
            except DevHostError as exc:
                problems.append(str(exc))
        http_functions = [f for f in self.functions if f.spec.trigger_type == "httptrigger"]
        self.http.routes = build_routes(http_functions, http_route_prefix(host_json))
        for function in self.functions:
            try:
                if function.spec.trigger_type == "queuetrigger":
                    assert queue_options is not None  # read above when any function has a queue trigger
                    service = queue_service(function.spec.trigger.get("connection"), settings)
                    self.pollers.append(QueuePoller(function, service, queue_options, self.max_polling_interval))
                elif function.spec.trigger_type == "timertrigger":
                    trigger = function.spec.trigger
                    schedule = Schedule(str(trigger.get("schedule") or ""))
                    run_on_startup = str(trigger.get("runOnStartup", "false")).lower() == "true"
                    self.timers.append(TimerRunner(function, schedule, run_on_startup=run_on_startup))
            except DevHostError as exc:
                message = str(exc)
                problems.append(message if message.startswith(f"{function.spec.name}:") else
                                f"{function.spec.name}: {message}")
        if problems:
            raise DevHostError(_problem_report(problems))
        if self.timers and (lookup_setting("WEBSITE_TIME_ZONE", settings) or lookup_setting("TZ", settings)):
            log.warning("WEBSITE_TIME_ZONE/TZ is set: the host would use it for timer schedules; devhost uses UTC")

    def stop(self) -> None:
        """Stop timers, pollers (waiting for running invocations) and the HTTP server."""
        if not self._started:
            return
        self._started = False
        self._teardown()
        log.info("Host stopped")

    def _teardown(self) -> None:
        workers: list[QueuePoller | TimerRunner] = [*self.timers, *self.pollers]
        for worker in workers:
            worker.request_stop()
        for worker in workers:
            worker.stop()
        if self.http is not None:
            self.http.stop()
        for name in self._exported:
            os.environ.pop(name, None)
        self._exported = []

    def __enter__(self) -> FunctionHost:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    # -- facts ----------------------------------------------------------------------------------

    @property
    def port(self) -> int:
        if self.http is None:
            raise RuntimeError("the host is not started")
        return self.http.port

    @property
    def base_url(self) -> str:
        """``http://<host>:<port>`` of the running server (routes start with the route prefix)."""
        return f"http://{self.bind_host}:{self.port}"

    def describe(self) -> list[str]:
        """One line per function, like ``func start`` prints them."""
        lines = []
        for route in self.http.routes if self.http else []:
            methods = ",".join(sorted(route.methods)) if route.methods else "ALL"
            name = route.function.spec.name if route.function else "?"
            lines.append(f"{name}: [{methods}] {self.base_url}/{route.template}")
        for poller in self.pollers:
            o = poller.options
            lines.append(f"{poller.function.spec.name}: queueTrigger queue '{poller.queue_name}' "
                         f"(batchSize {o.batch_size}, newBatchThreshold {o.new_batch_threshold}, "
                         f"maxDequeueCount {o.max_dequeue_count}, visibilityTimeout {o.visibility_timeout:g}s, "
                         f"messageEncoding {o.message_encoding}, polling up to {poller.polling_interval:g}s)")
        for timer in self.timers:
            lines.append(f"{timer.function.spec.name}: timerTrigger schedule {timer.schedule.describe()}, "
                         f"next {timer.next.isoformat()}")
        return lines

    def _announce(self) -> None:
        lines = self.describe()
        log.info("Functions:\n\n%s\n", "\n\n".join(f"\t{line}" for line in lines) if lines else "\t(none)")
        log.info("Host started on %s", self.base_url)


def _any(specs: list[FunctionSpec], trigger_type: str) -> bool:
    return any(spec.trigger_type == trigger_type for spec in specs)


def _problem_report(problems: list[str]) -> str:
    return "the function app cannot start:\n  - " + "\n  - ".join(problems)
