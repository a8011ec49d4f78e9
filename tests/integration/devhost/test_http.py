"""devhost's HTTP triggers over real sockets on 127.0.0.1 (no storage needed)."""
from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from devhost import FunctionHost, PortInUseError

from .conftest import wait_for

PROJECT_ROOT = Path(__file__).resolve().parents[3]


def test_round_trip_with_real_request_and_response(http_app):
    with FunctionHost(http_app.root, settings={}, port=0) as host:
        reply = requests.post(f"{host.base_url}/api/echo/pen?a=1&a=2&b=", data="héllo".encode(),
                              headers={"Content-Type": "text/plain", "X-Repeated": "one"}, timeout=5)
        assert reply.status_code == 200
        assert reply.headers["X-Echo"] == "yes"
        assert reply.headers["Content-Type"] == "application/json"
        assert reply.json() == {
            "method": "POST", "url": f"{host.base_url}/api/echo/pen?a=1&a=2&b=",
            "params": {"a": "1,2", "b": ""}, "route": {"item": "pen"}, "body": "héllo",
            "content_type": "text/plain", "x_repeated": "one",
        }
        assert requests.get(f"{host.base_url}/api/echo?status=201", timeout=5).status_code == 201
        assert requests.get(f"{host.base_url}/api/open", timeout=5).text == "open to all"


def test_wrong_method_is_404_like_the_host_and_unknown_route_is_404(http_app):
    with FunctionHost(http_app.root, settings={}, port=0) as host:
        wrong = requests.delete(f"{host.base_url}/api/echo", timeout=5)
        assert (wrong.status_code, wrong.content) == (404, b"")
        assert requests.get(f"{host.base_url}/api/nothing-here", timeout=5).status_code == 404
        assert requests.get(f"{host.base_url}/echo", timeout=5).status_code == 404  # the prefix is required


def test_wrong_method_can_be_405_with_allow(http_app):
    with FunctionHost(http_app.root, settings={"DEVHOST_WRONG_METHOD_STATUS": "405"}, port=0) as host:
        wrong = requests.put(f"{host.base_url}/api/echo/x", data=b"ignored", timeout=5)
        assert wrong.status_code == 405 and wrong.headers["Allow"] == "GET, POST"
        assert requests.get(f"{host.base_url}/api/unknown", timeout=5).status_code == 404


def test_function_exception_is_an_empty_500_and_the_host_keeps_serving(http_app, caplog):
    with FunctionHost(http_app.root, settings={}, port=0) as host, caplog.at_level(logging.INFO, "devhost"):
        failed = requests.get(f"{host.base_url}/api/echo?explode=1", timeout=5)
        assert (failed.status_code, failed.content) == (500, b"")
        assert requests.get(f"{host.base_url}/api/echo", timeout=5).status_code == 200
    assert any("(Failed, Id=" in r.getMessage() and "RuntimeError: asked to fail" in r.getMessage()
               for r in caplog.records)


def test_keys_are_not_checked_by_default_but_can_be_required(http_app, caplog):
    with FunctionHost(http_app.root, settings={}, port=0) as host:
        assert requests.get(f"{host.base_url}/api/echo", timeout=5).status_code == 200
    secret = "s3cret-key-value"
    settings = {"DEVHOST_REQUIRE_KEYS": "true", "DEVHOST_FUNCTION_KEY": secret}
    with caplog.at_level(logging.DEBUG, "devhost"), FunctionHost(http_app.root, settings=settings, port=0) as host:
        url = f"{host.base_url}/api/echo"
        assert requests.get(url, timeout=5).status_code == 401
        assert requests.get(url, headers={"x-functions-key": "wrong"}, timeout=5).status_code == 401
        assert requests.get(url, headers={"x-functions-key": secret}, timeout=5).status_code == 200
        assert requests.get(url, params={"code": secret}, timeout=5).status_code == 200
        assert requests.get(f"{host.base_url}/api/open", timeout=5).status_code == 200  # anonymous
    devhost_logs = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("devhost"))
    assert "Executed 'Functions.echo_" in devhost_logs and secret not in devhost_logs


def test_a_function_key_opens_only_its_own_function_and_the_host_key_opens_all(http_app):
    echo = next(p.name for p in http_app.root.iterdir() if p.name.startswith("echo_"))
    settings = {"DEVHOST_REQUIRE_KEYS": "true", f"DEVHOST_KEY_{echo}": "echo-only",
                "DEVHOST_KEY_some_other_function": "other-only", "DEVHOST_FUNCTION_KEY": "host-key"}
    with FunctionHost(http_app.root, settings=settings, port=0) as host:
        url = f"{host.base_url}/api/echo"
        assert requests.get(url, params={"code": "echo-only"}, timeout=5).status_code == 200
        assert requests.get(url, params={"code": "host-key"}, timeout=5).status_code == 200
        assert requests.get(url, params={"code": "other-only"}, timeout=5).status_code == 401


def test_require_keys_without_a_key_does_not_start(http_app):
    from devhost import DevHostError

    with pytest.raises(DevHostError, match="DEVHOST_FUNCTION_KEY"):
        FunctionHost(http_app.root, settings={"DEVHOST_REQUIRE_KEYS": "true"}, port=0).start()


def test_request_body_limit(http_app):
    with FunctionHost(http_app.root, settings={"FUNCTIONS_REQUEST_BODY_SIZE_LIMIT": "1000"}, port=0) as host:
        assert requests.post(f"{host.base_url}/api/echo", data=b"x" * 1000, timeout=5).status_code == 200
        assert requests.post(f"{host.base_url}/api/echo", data=b"x" * 1001, timeout=5).status_code == 413
        chunks = (b"x" * 400 for _ in range(3))  # chunked transfer encoding, 1200 bytes in all
        assert requests.post(f"{host.base_url}/api/echo", data=chunks, timeout=5).status_code == 413
        small = (part for part in (b"ab", b"cd"))
        assert requests.post(f"{host.base_url}/api/echo", data=small, timeout=5).json()["body"] == "abcd"
    with FunctionHost(http_app.root, settings={}, port=0) as host:
        # The host's default limit is 100 MB: announce one byte more, send nothing, get 413 at once.
        with socket.create_connection(("127.0.0.1", host.port), timeout=5) as conn:
            conn.sendall(b"POST /api/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 104857601\r\n\r\n")
            assert conn.recv(100).startswith(b"HTTP/1.1 413 ")


def test_keep_alive_connections_serve_many_requests(http_app):
    with FunctionHost(http_app.root, settings={}, port=0) as host, requests.Session() as session:
        for n in range(20):
            assert session.get(f"{host.base_url}/api/echo/{n}", timeout=5).json()["route"] == {"item": str(n)}


def test_settings_are_exported_only_where_the_environment_has_none(http_app, monkeypatch):
    monkeypatch.setenv("DEVHOST_TEST_ALREADY_SET", "from-environment")
    with FunctionHost(http_app.root, settings={"DEVHOST_TEST_ALREADY_SET": "from-settings",
                                               "DEVHOST_TEST_NEW": "from-settings"}, port=0):
        assert os.environ["DEVHOST_TEST_ALREADY_SET"] == "from-environment"
        assert os.environ["DEVHOST_TEST_NEW"] == "from-settings"
    assert "DEVHOST_TEST_NEW" not in os.environ  # removed again on stop


def test_busy_port_is_a_clear_error(http_app):
    with FunctionHost(http_app.root, settings={}, port=0) as first:
        with pytest.raises(PortInUseError, match=f"port {first.port} is already in use — is another copy running?"):
            FunctionHost(http_app.root, settings={}, port=first.port).start()
        cli = subprocess.run([sys.executable, "-m", "devhost", "--app-root", str(http_app.root),
                              "--port", str(first.port)], cwd=PROJECT_ROOT, capture_output=True, text=True,
                             timeout=60)
    assert cli.returncode == 1
    assert f"port {first.port} is already in use — is another copy running?" in cli.stderr


def test_unknown_setting_stops_startup_with_exit_code_2(tmp_path):
    (tmp_path / "host.json").write_text(json.dumps({"version": "2.0"}))
    (tmp_path / "fn_unknown_setting").mkdir()
    (tmp_path / "fn_unknown_setting" / "function.json").write_text(json.dumps({"bindings": [
        {"type": "timerTrigger", "direction": "in", "name": "t", "schedule": "%NO_SUCH_SETTING_X%"}]}))
    (tmp_path / "fn_unknown_setting" / "__init__.py").write_text("def main(t):\n    pass\n")
    cli = subprocess.run([sys.executable, "-m", "devhost", "--app-root", str(tmp_path), "--port", "0"],
                         cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=60)
    assert cli.returncode == 2
    assert "%NO_SUCH_SETTING_X%, which is not set" in cli.stderr


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_cli_serves_then_stops_cleanly_on_signal(http_app, signum):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    (http_app.root / "local.settings.json").write_text(json.dumps({"Values": {"FROM_FILE": "yes"}}))
    process = subprocess.Popen([sys.executable, "-m", "devhost", "--app-root", str(http_app.root),
                                "--port", str(port)], cwd=PROJECT_ROOT, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    try:
        def serving():
            try:
                return requests.get(f"http://127.0.0.1:{port}/api/echo/cli", timeout=1).status_code == 200
            except requests.ConnectionError:
                assert process.poll() is None, process.stdout.read()
                return False

        wait_for(serving, timeout=30)
        process.send_signal(signum)
        output, _ = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, output
    assert f"echo_{http_app.token}: [GET,POST] http://127.0.0.1:{port}/api/echo/{{item?}}" in output
    assert "Executed 'Functions.echo_" in output and "(Succeeded, Id=" in output
    assert "Host stopped" in output
