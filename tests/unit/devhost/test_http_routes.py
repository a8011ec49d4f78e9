"""Route templates, method filters and the response mapping of HTTP triggers (no sockets)."""
from __future__ import annotations

import azure.functions as func
import pytest

from devhost.http_trigger import compile_route, join_repeated, response_parts, route_template


@pytest.mark.parametrize("prefix, route, name, expected", [
    ("api", None, "score", "api/score"),
    ("api", "", "score", "api/score"),
    ("api", "/orders/{id}/", "score", "api/orders/{id}"),
    ("", "orders", "score", "orders"),
    ("v1/public", "x", "score", "v1/public/x"),
])
def test_route_template_is_prefix_plus_route_or_function_name(prefix, route, name, expected):
    assert route_template(prefix, route, name) == expected


def test_literal_routes_ignore_case_and_a_trailing_slash():
    route = compile_route("api/Echo")
    assert route.match("/api/echo") == {}
    assert route.match("/API/ECHO/") == {}
    assert route.match("/api/echo/more") is None
    assert route.match("/api") is None


def test_parameters_constraints_optional_default_and_catch_all():
    by_id = compile_route("api/orders/{id:int}")
    assert by_id.match("/api/orders/42") == {"id": "42"}
    assert by_id.match("/api/orders/abc") is None
    optional = compile_route("api/items/{name?}")
    assert optional.match("/api/items") == {}
    assert optional.match("/api/items/pen") == {"name": "pen"}
    defaulted = compile_route("api/page/{n=1}")
    assert defaulted.match("/api/page") == {"n": "1"}
    assert defaulted.match("/api/page/3") == {"n": "3"}
    rest = compile_route("api/files/{*path}")
    assert rest.match("/api/files/a/b/c.txt") == {"path": "a/b/c.txt"}
    assert compile_route("api/{a}-{b}").match("/api/x-y") == {"a": "x", "b": "y"}
    assert compile_route("api/u/{id:guid}").match("/api/u/0f8fad5b-d9cb-469f-a165-70867728950e") is not None


def test_empty_template_is_the_root():
    assert compile_route("").match("/") == {}


def test_methods_are_case_insensitive_and_default_to_all():
    post_only = compile_route("api/x", methods=["post", "Put"])
    assert post_only.allows("POST") and post_only.allows("PUT") and not post_only.allows("GET")
    assert compile_route("api/x").allows("DELETE")


def test_literal_routes_take_precedence_over_parameters():
    routes = sorted([compile_route("api/{name}"), compile_route("api/{*rest}"), compile_route("api/health")],
                    key=lambda r: r.precedence)
    assert [r.template for r in routes] == ["api/health", "api/{name}", "api/{*rest}"]


def test_repeated_query_parameters_and_headers_are_comma_joined():
    assert join_repeated([("a", "1"), ("b", "x"), ("a", "2")]) == {"a": "1,2", "b": "x"}


def test_response_from_http_response_object():
    status, headers, body = response_parts(func.HttpResponse("héllo", status_code=201, headers={"X-Id": "7"}))
    assert (status, body) == (201, "héllo".encode())
    assert ("X-Id", "7") in headers and ("Content-Type", "text/plain; charset=utf-8") in headers
    _, headers, _ = response_parts(func.HttpResponse(b"{}", mimetype="application/json"))
    assert ("Content-Type", "application/json") in headers
    _, headers, _ = response_parts(func.HttpResponse("x", headers={"content-type": "text/csv"}))
    assert [v for k, v in headers if k.lower() == "content-type"] == ["text/csv"]
    _, headers, _ = response_parts(func.HttpResponse("x", mimetype="text/html", charset="latin-1"))
    assert ("Content-Type", "text/html; charset=latin-1") in headers


def test_response_from_plain_values():
    assert response_parts("hi") == (200, [("Content-Type", "text/plain; charset=utf-8")], b"hi")
    assert response_parts(b"\x00") == (200, [("Content-Type", "application/octet-stream")], b"\x00")
    assert response_parts(None) == (204, [], b"")
    with pytest.raises(TypeError, match="must return"):
        response_parts({"not": "supported"})
