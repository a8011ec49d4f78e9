"""Settings files, %SETTING% references, TimeSpans and host.json lookups."""
from __future__ import annotations

import json

import pytest

from devhost.config import (
    DevHostError,
    apply_settings,
    ci_get,
    http_route_prefix,
    lookup_setting,
    parse_timespan,
    read_host_json,
    read_local_settings,
    resolve_setting_refs,
)


def write_json(path, data):
    path.write_text(json.dumps(data))
    return path


def test_reads_values_and_host_section(tmp_path):
    write_json(tmp_path / "local.settings.json",
               {"IsEncrypted": False, "Values": {"A": "1", "FLAG": True, "N": 3, "EMPTY": None},
                "Host": {"LocalHttpPort": 7072}})
    local = read_local_settings(tmp_path)
    assert local.values == {"A": "1", "FLAG": "true", "N": "3", "EMPTY": ""}
    assert local.host_section == {"LocalHttpPort": 7072}
    assert local.path == tmp_path / "local.settings.json"


def test_falls_back_to_the_example_file_then_to_nothing(tmp_path):
    assert read_local_settings(tmp_path).values == {}
    write_json(tmp_path / "local.settings.json.example", {"Values": {"FROM": "example"}})
    assert read_local_settings(tmp_path).values == {"FROM": "example"}
    write_json(tmp_path / "local.settings.json", {"Values": {"FROM": "real"}})
    assert read_local_settings(tmp_path).values == {"FROM": "real"}


def test_explicit_settings_file_must_exist_and_encrypted_files_are_refused(tmp_path):
    with pytest.raises(DevHostError, match="does not exist"):
        read_local_settings(tmp_path, tmp_path / "missing.json")
    encrypted = write_json(tmp_path / "enc.json", {"IsEncrypted": True, "Values": {}})
    with pytest.raises(DevHostError, match="encrypted"):
        read_local_settings(tmp_path, encrypted)
    broken = tmp_path / "broken.json"
    broken.write_text("{nope")
    with pytest.raises(DevHostError, match="cannot read"):
        read_local_settings(tmp_path, broken)


def test_real_environment_wins_over_local_settings():
    environ = {"KEEP": "from-environment"}
    added = apply_settings({"KEEP": "from-file", "NEW": "from-file"}, environ)
    assert environ == {"KEEP": "from-environment", "NEW": "from-file"}
    assert added == ["NEW"]


def test_setting_lookup_is_exact_first_then_case_insensitive():
    settings = {"Queue": "exact", "QUEUE_NAME": "upper"}
    assert lookup_setting("Queue", settings) == "exact"
    assert lookup_setting("queue_name", settings) == "upper"
    assert lookup_setting("absent", settings) is None


def test_resolves_every_setting_reference():
    settings = {"PREFIX": "tx", "ENV": "dev"}
    assert resolve_setting_refs("%PREFIX%-%env%-in", settings) == "tx-dev-in"
    assert resolve_setting_refs("no references", settings) == "no references"
    with pytest.raises(KeyError, match="MISSING"):
        resolve_setting_refs("%MISSING%", settings)


@pytest.mark.parametrize("text, seconds", [
    ("00:00:00", 0), ("00:00:10", 10), ("00:01:00", 60), ("01:02:03", 3723), ("1.00:00:00", 86400),
    ("00:00:00.100", 0.1), ("00:05", 300), ("-00:00:01", -1),
])
def test_parses_dotnet_timespans(text, seconds):
    assert parse_timespan(text, what="x") == pytest.approx(seconds)


def test_numbers_are_timespans_only_when_their_unit_is_known():
    assert parse_timespan(2000, what="x", number_unit_seconds=0.001) == pytest.approx(2.0)
    for bad in (2000, "soon", "25:00:00", "00:61:00"):
        with pytest.raises(DevHostError):
            parse_timespan(bad, what="x")


def test_host_json_lookups_ignore_case(tmp_path):
    with pytest.raises(DevHostError, match="host.json not found"):
        read_host_json(tmp_path)
    write_json(tmp_path / "host.json", {"extensions": {}})
    with pytest.raises(DevHostError, match='"version": "2.0"'):
        read_host_json(tmp_path)
    write_json(tmp_path / "host.json", {"version": "2.0", "Extensions": {"HTTP": {"RoutePrefix": "/v1/"}}})
    host_json = read_host_json(tmp_path)
    assert ci_get(host_json, "extensions", "http", "routePrefix") == "/v1/"
    assert ci_get(host_json, "extensions", "queues", "batchSize", default=16) == 16
    assert http_route_prefix(host_json) == "v1"
    assert http_route_prefix({}) == "api"
    assert http_route_prefix({"extensions": {"http": {"routePrefix": ""}}}) == ""
