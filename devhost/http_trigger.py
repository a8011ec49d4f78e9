"""HTTP triggers: routing, keys and the request/response mapping of the Functions host.

Mirrored (with the host's defaults):

* URL ``/<routePrefix>/<route>``: ``routePrefix`` from host.json
  ``extensions.http.routePrefix`` (default ``api``, may be empty); ``route``
  defaults to the function name. Route templates are ASP.NET ones:
  ``orders/{id}``, ``{id:int}``, ``{id?}``, ``{id=default}``, ``{*rest}``;
  matching ignores case and a trailing slash, literal routes win over
  parameters.
* ``methods``: only the declared ones (all when absent). A request to a known
  route with another method gets **404**, because that is what the host does
  (its route constraint fails and routing falls through; see
  azure-functions-host issue #10098). Set ``DEVHOST_WRONG_METHOD_STATUS=405``
  to get ``405 Method Not Allowed`` with an ``Allow`` header instead.
* Query parameters and headers that repeat are joined with ``,`` (the host
  passes ASP.NET ``StringValues.ToString()`` to the worker).
* The response: status, headers, and ``Content-Type`` from
  ``mimetype``/``charset`` when the function set none (as the worker's
  ``HttpResponseConverter`` does). A ``str`` result is a 200 text/plain
  response; ``None`` gives 204.
* An exception in the function gives 500 with an empty body, as the host
  returns it; the traceback goes to the log.
* Request bodies over ``FUNCTIONS_REQUEST_BODY_SIZE_LIMIT`` bytes (default
  104857600, 100 MB, the host's limit) get 413.
* Keys: Core Tools does not check ``authLevel`` locally, and neither does
  devhost by default. With ``DEVHOST_REQUIRE_KEYS=true``, ``function`` and
  ``admin`` level functions (``function`` is the default level) need a key in
  the ``x-functions-key`` header or the ``code`` query parameter, else 401:
  the host key ``DEVHOST_FUNCTION_KEY`` (accepted by every function, as an
  Azure host key is), or a function key ``DEVHOST_KEY_<function name>``
  (accepted by that function only, as an Azure function key is — e.g. the
  payment switch's key for predict cannot post labels). Keys are never logged.

Not mirrored: CORS, proxies, the ``/admin`` API, host keys vs function keys
(one key serves both levels), ASP.NET constraints other than int, long, bool,
guid, alpha, double, float and decimal (others match any segment).
"""
from __future__ import annotations

import errno
import hmac
import logging
import re
import socket
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import azure.functions as func
from azure.functions import _abc as func_abc

from .config import DevHostError, lookup_setting
from .functions import LoadedFunction

log = logging.getLogger("devhost")

DEFAULT_BODY_LIMIT = 104_857_600  # FUNCTIONS_REQUEST_BODY_SIZE_LIMIT default: 100 MB
ALL_METHODS = ("GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "TRACE")
KEEP_ALIVE_SECONDS = 130  # Kestrel's default keep-alive timeout

_PARAMETER = re.compile(r"\{([^{}]+)\}")
_KEY_IN_QUERY = re.compile(r"([?&]code=)[^&\s'\"]*", re.IGNORECASE)
_CONSTRAINTS = {
    "int": r"-?[0-9]+", "long": r"-?[0-9]+", "bool": r"(?:true|false)", "alpha": r"[a-z]+",
    "guid": r"\{?[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}\}?",
    "double": r"-?[0-9]+(?:\.[0-9]+)?", "float": r"-?[0-9]+(?:\.[0-9]+)?", "decimal": r"-?[0-9]+(?:\.[0-9]+)?",
}


class PortInUseError(DevHostError):
    """The HTTP port is taken by another process."""


@dataclass
class HttpRoute:
    """One HTTP-triggered function's URL pattern and accepted methods."""

    function: LoadedFunction | None
    template: str  # prefix + route, e.g. "api/orders/{id:int}"
    pattern: re.Pattern
    parameters: list[tuple[str, str, str | None]]  # (regex group, parameter name, default)
    methods: frozenset[str] | None  # None: every method
    auth_level: str
    precedence: tuple

    def match(self, path: str) -> dict[str, str] | None:
        found = self.pattern.match(path)
        if not found:
            return None
        values = {}
        for group, name, default in self.parameters:
            value = found.group(group)
            if value is None or value == "":
                if default is None:
                    continue
                value = default
            values[name] = value
        return values

    def allows(self, method: str) -> bool:
        return self.methods is None or method in self.methods


def route_template(route_prefix: str, route: str | None, function_name: str) -> str:
    """The full template a function answers on: ``<prefix>/<route or function name>``."""
    route = (route if route is not None and str(route).strip("/") != "" else function_name)
    return "/".join(part for part in (route_prefix.strip("/"), str(route).strip("/")) if part)


def compile_route(template: str, *, methods: Any = None, auth_level: str = "function",
                  function: LoadedFunction | None = None) -> HttpRoute:
    """Turn an ASP.NET route template into a matcher for URL paths (which start with ``/``)."""
    regex = ""
    parameters: list[tuple[str, str, str | None]] = []
    precedence = []
    for segment in (s for s in template.strip("/").split("/") if s):
        pieces, position, optional_segment, rank = [], 0, False, 0
        for found in _PARAMETER.finditer(segment):
            pieces.append(re.escape(segment[position:found.start()]))
            body = found.group(1).strip()
            catch_all = body.startswith("*")
            body = body.lstrip("*")
            optional = body.endswith("?")
            body = body.rstrip("?")
            name, _, default = body.partition("=")
            name, *constraints = name.split(":")
            group = f"p{len(parameters)}"
            known = [_CONSTRAINTS[c.lower()] for c in constraints if c.lower() in _CONSTRAINTS]
            value_regex = ".*" if catch_all else (known[0] if known else r"[^/]+")
            pieces.append(f"(?P<{group}>{value_regex})")
            parameters.append((group, name.strip(), default if default != "" else None))
            whole_segment = found.start() == 0 and found.end() == len(segment)
            optional_segment = whole_segment and (optional or catch_all or default != "")
            rank = max(rank, 3 if catch_all else (1 if constraints else 2))
            position = found.end()
        pieces.append(re.escape(segment[position:]))
        segment_regex = "".join(pieces)
        regex += f"(?:/{segment_regex})?" if optional_segment else f"/{segment_regex}"
        precedence.append(rank)
    pattern = re.compile(f"^{regex}/?$" if regex else "^/?$", re.IGNORECASE)
    allowed = None
    if methods:
        allowed = frozenset(str(m).upper() for m in methods)
    return HttpRoute(function, template, pattern, parameters, allowed, str(auth_level or "function").lower(),
                     tuple(precedence) + (9,))  # shorter templates after longer ones with equal prefixes


def build_routes(functions: list[LoadedFunction], route_prefix: str) -> list[HttpRoute]:
    """Routes of all HTTP-triggered functions, most specific first (ASP.NET route precedence)."""
    routes = []
    for function in functions:
        trigger = function.spec.trigger
        template = route_template(route_prefix, trigger.get("route"), function.spec.name)
        routes.append(compile_route(template, methods=trigger.get("methods"),
                                    auth_level=trigger.get("authLevel", "function"), function=function))
    return sorted(routes, key=lambda r: r.precedence)


def http_output_name(function: LoadedFunction) -> str | None:
    """The name of the function's ``http`` output binding (``$return`` or a named one)."""
    return next((b["name"] for b in function.spec.out_bindings if str(b.get("type", "")).lower() == "http"), None)


def join_repeated(pairs) -> dict[str, str]:
    """Repeated names joined with ``,``, as ASP.NET's ``StringValues.ToString()`` does."""
    joined: dict[str, str] = {}
    for name, value in pairs:
        joined[name] = f"{joined[name]},{value}" if name in joined else value
    return joined


def response_parts(result: Any) -> tuple[int, list[tuple[str, str]], bytes]:
    """Status, headers and body of what an HTTP function returned (TypeError if unsupported)."""
    if result is None:
        return 204, [], b""
    if isinstance(result, str):
        return 200, [("Content-Type", "text/plain; charset=utf-8")], result.encode("utf-8")
    if isinstance(result, (bytes, bytearray)):
        return 200, [("Content-Type", "application/octet-stream")], bytes(result)
    if isinstance(result, func_abc.HttpResponse):
        headers = [(k, v) for k, v in result.headers.items()
                   if k.lower() not in ("content-length", "transfer-encoding", "connection")]
        if not any(k.lower() == "content-type" for k, _ in headers):
            mimetype = result.mimetype or "text/plain"
            headers.append(("Content-Type", f"{mimetype}; charset={result.charset}"
                            if mimetype.startswith("text/") else mimetype))
        return int(result.status_code), headers, result.get_body() or b""
    raise TypeError(f"an HTTP function must return func.HttpResponse, str, bytes or None, "
                    f"not {type(result).__name__}")


class HttpFrontend:
    """A threaded HTTP/1.1 server that dispatches requests to HTTP-triggered functions."""

    def __init__(self, routes: list[HttpRoute], *, host: str, port: int, settings: Mapping[str, str],
                 body_limit: int = DEFAULT_BODY_LIMIT):
        self.routes = routes
        self.body_limit = body_limit
        self.keys = _Keys.from_settings(settings)
        wrong_method = (lookup_setting("DEVHOST_WRONG_METHOD_STATUS", settings) or "404").strip()
        if wrong_method not in ("404", "405"):
            raise DevHostError(f"DEVHOST_WRONG_METHOD_STATUS must be 404 or 405, got {wrong_method!r}")
        self.wrong_method_status = int(wrong_method)
        try:
            self.server = _Server((host, port), _Handler)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise PortInUseError(f"port {port} is already in use — is another copy running?") from exc
            raise DevHostError(f"cannot listen on {host}:{port}: {exc}") from exc
        self.server.frontend = self
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return self.server.server_address[1]

    def start(self) -> None:
        self._thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.2},
                                        name="devhost-http", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            self.server.shutdown()
            self._thread.join()
        self.server.server_close()
        self.server.close_connections()

    def find(self, method: str, path: str) -> tuple[HttpRoute | None, dict[str, str], list[HttpRoute]]:
        """The route for this request, its route values, and routes that matched the path only."""
        path_only: list[HttpRoute] = []
        for route in self.routes:
            values = route.match(path)
            if values is None:
                continue
            if route.allows(method):
                return route, values, path_only
            path_only.append(route)
        return None, {}, path_only

    def key_accepted(self, route: HttpRoute, headers, query: Mapping[str, str]) -> bool:
        if self.keys is None or route.auth_level == "anonymous":
            return True
        given = (headers.get("x-functions-key") or query.get("code") or "").encode("utf-8")
        return any(hmac.compare_digest(given, key.encode("utf-8"))
                   for key in self.keys.accepted(route.function.spec.name if route.function else ""))


@dataclass(frozen=True)
class _Keys:
    """The host key (opens every function) and function keys (each opens its own function)."""

    host_key: str | None
    function_keys: dict[str, str]

    @classmethod
    def from_settings(cls, settings: Mapping[str, str]) -> _Keys | None:
        """The keys, or None when keys are not enforced (the default, as with Core Tools)."""
        if (lookup_setting("DEVHOST_REQUIRE_KEYS", settings) or "").strip().lower() not in ("true", "1"):
            return None
        prefix = "devhost_key_"
        function_keys = {name[len(prefix):].casefold(): value for name, value in settings.items()
                         if name.casefold().startswith(prefix) and value}
        host_key = lookup_setting("DEVHOST_FUNCTION_KEY", settings) or None
        if not host_key and not function_keys:
            raise DevHostError("DEVHOST_REQUIRE_KEYS=true needs a key: DEVHOST_FUNCTION_KEY (every function) or "
                               "DEVHOST_KEY_<function name> (that function only)")
        return cls(host_key, function_keys)

    def accepted(self, function: str) -> list[str]:
        return [key for key in (self.host_key, self.function_keys.get(function.casefold())) if key]


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128
    frontend: HttpFrontend

    def __init__(self, *args, **kwargs):
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(*args, **kwargs)

    def track(self, connection: socket.socket, alive: bool) -> None:
        with self._connections_lock:
            (self._connections.add if alive else self._connections.discard)(connection)

    def close_connections(self) -> None:
        """End idle keep-alive connections so their threads finish."""
        with self._connections_lock:
            for connection in list(self._connections):
                try:
                    connection.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def handle_error(self, request, client_address) -> None:
        log.debug("HTTP connection from %s failed", client_address, exc_info=True)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "devhost"
    sys_version = ""
    disable_nagle_algorithm = True
    timeout = KEEP_ALIVE_SECONDS
    server: _Server

    def setup(self) -> None:
        super().setup()
        self.server.track(self.connection, True)

    def finish(self) -> None:
        self.server.track(self.connection, False)
        super().finish()

    def log_request(self, code="-", size="-") -> None:  # the host logs invocations, not requests
        pass

    def log_message(self, format: str, *args) -> None:
        # Error messages quote the request line: never let a ?code= key reach the log.
        log.debug("HTTP %s: %s", self.address_string(), _KEY_IN_QUERY.sub(r"\1***", format % args))

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        # http.server would quote the request line (a ?code= key included) back in the status
        # reason and an HTML body; like the host, answer with the bare status.
        self.log_message("%d %s", code, message or "")
        self.send_response(code)
        self.send_header("Content-Length", "0")
        self.send_header("Connection", "close")
        self.close_connection = True
        self.end_headers()

    def handle_one_request(self) -> None:
        # Dispatch every method through one place, whatever its name.
        try:
            self.raw_requestline = self.rfile.readline(65537)
            if len(self.raw_requestline) > 65536:
                self.send_error(414)
                return
            if not self.raw_requestline:
                self.close_connection = True
                return
            if not self.parse_request():
                return
            self._dispatch()
            self.wfile.flush()
        except (TimeoutError, ConnectionError):
            self.close_connection = True

    def _dispatch(self) -> None:
        frontend = self.server.frontend
        method = self.command.upper()
        split = urlsplit(self.path)
        path = unquote(split.path)
        query = join_repeated(parse_qsl(split.query, keep_blank_values=True))
        route, route_values, path_only = frontend.find(method, path)
        if route is None:
            self._discard_body()
            if path_only and frontend.wrong_method_status == 405:
                allowed = sorted({m for r in path_only for m in (r.methods or ALL_METHODS)})
                self._respond(405, [("Allow", ", ".join(allowed))], b"")
            else:
                self._respond(404, [], b"")
            return
        if not frontend.key_accepted(route, self.headers, query):
            self._discard_body()
            self._respond(401, [], b"")
            return
        body = self._read_body(frontend.body_limit)
        if body is None:
            return
        request = func.HttpRequest(
            method=method,
            url=f"http://{self.headers.get('Host') or '{}:{}'.format(*self.server.server_address[:2])}{self.path}",
            headers=join_repeated(self.headers.items()),
            params=query,
            route_params=route_values,
            body=body,
        )
        function = route.function
        assert function is not None  # routes are built from loaded functions
        outcome = function.invoke(request)
        if not outcome.succeeded:
            self._respond(500, [], b"")
            return
        output = http_output_name(function)
        result = outcome.return_value if output in (None, "$return") else outcome.outputs.get(output)
        try:
            status, headers, payload = response_parts(result)
        except TypeError as exc:
            log.error("Functions.%s (Id=%s): %s", function.spec.name, outcome.invocation_id, exc)
            self._respond(500, [], b"")
            return
        self._respond(status, headers, payload)

    def _read_body(self, limit: int) -> bytes | None:
        """The request body, or None after answering 400/413 (then the connection closes)."""
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            chunks: list[bytes] = []
            total = 0
            while True:
                size_line = self.rfile.readline(1024)
                try:
                    size = int(size_line.split(b";")[0].strip(), 16)
                except ValueError:
                    return self._refuse(400)
                if size == 0:
                    while self.rfile.readline(8192) not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return b"".join(chunks)
                total += size
                if total > limit:
                    return self._refuse(413)
                chunks.append(self.rfile.read(size))
                self.rfile.readline(8)
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            return self._refuse(400)
        if length < 0:
            return self._refuse(400)
        if length > limit:
            return self._refuse(413)
        return self.rfile.read(length) if length else b""

    def _refuse(self, status: int) -> bytes | None:
        """Answer ``status`` and close; None tells the caller there is no body to use."""
        self.close_connection = True
        self._respond(status, [], b"")
        return None

    def _discard_body(self) -> None:
        """Keep the connection usable after answering without reading the body."""
        length = self.headers.get("Content-Length")
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower() or \
                (length and (not length.isdigit() or int(length) > 1_048_576)):
            self.close_connection = True
        elif length:
            self.rfile.read(int(length))

    def _respond(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        self.send_response_only(status)
        self.send_header("Date", self.date_time_string())
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        if self.close_connection:
            self.send_header("Connection", "close")
        # One write for head and body: no Nagle/delayed-ACK stall between them.
        buffer: list[bytes] = self._headers_buffer  # BaseHTTPRequestHandler builds it
        buffer.append(b"\r\n")
        head = b"".join(buffer)
        self._headers_buffer: list[bytes] = []
        self.wfile.write(head if self.command == "HEAD" else head + body)

