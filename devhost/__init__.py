"""devhost: a small local stand-in for Azure Functions Core Tools' ``func start``.

A development tool only (not part of the deployment package). It serves the
app's function folders unchanged (Python v1 model: ``<folder>/function.json``
and ``<folder>/__init__.py`` with ``main``), configured by the app's
``host.json`` and ``local.settings.json``, for machines where Core Tools cannot
be installed::

    python -m devhost --app-root . --port 7071 [--settings local.settings.json] [--host 127.0.0.1]

or in-process (tests, benchmarks)::

    from devhost.host import FunctionHost
    with FunctionHost(app_root, settings={...}, port=0) as host:
        host.base_url

What it mirrors of the real host (details and defaults in each module):

* settings: ``local.settings.json`` ``Values`` into the environment, real
  environment variables winning; ``%NAME%`` references in bindings
  (:mod:`devhost.config`);
* discovery, loading as ``__app__.<folder>`` like the Python worker,
  ``disabled``, ``scriptFile``/``entryPoint``, parameter/binding checks, the
  host's one-line invocation log (:mod:`devhost.functions`);
* HTTP triggers: routes, methods, route prefix, keys (a host key opening every
  function, function keys opening only their own), 100 MB body limit, empty 500 on
  exceptions (:mod:`devhost.http_trigger`);
* queue triggers: host.json ``extensions.queues`` and its defaults, batches,
  retries, poison queue, base64 decoding, polling backoff
  (:mod:`devhost.queue_trigger`);
* timer triggers: NCRONTAB with seconds, runOnStartup, no overlapping runs
  (:mod:`devhost.timer_trigger`).

It is frozen to what this app uses (HTTP, queue and timer triggers, the v1 model);
each behaviour above is pinned by a test: settings and references
(tests/unit/devhost/test_config.py), discovery and loading as the worker does, app root
last on ``sys.path`` (tests/unit/devhost/test_functions.py), routes and responses
(tests/unit/devhost/test_http_routes.py, tests/integration/devhost/test_http.py, keys
included), queue options, base64 and poison queues (tests/unit/devhost/test_queue_options.py,
tests/integration/devhost/test_triggers.py), NCRONTAB timers
(tests/unit/devhost/test_timer_schedule.py), and the whole app served over HTTP
(tests/e2e/test_local_host.py).

What it does not do: other trigger or binding types (a function using one
stops startup with a clear message), the v2 decorator model, Durable
Functions, the admin API, CORS, proxies, Application Insights, function
timeouts, retry policies, dynamic concurrency, timer ``useMonitor``, time
zones other than UTC, and process isolation (functions run in the devhost
process, in threads, as the worker runs sync functions). Where it differs
from the host on purpose, the module says so. Startup problems (an unknown
``%SETTING%``, an import error...) stop devhost, where the real host would
start and mark only that function as failed.
"""
from .config import DevHostError
from .host import FunctionHost
from .http_trigger import PortInUseError

__all__ = ["DevHostError", "FunctionHost", "PortInUseError"]
