"""App settings, ``%SETTING%`` references and ``host.json``, read the way the host does.

* ``local.settings.json`` ``Values`` become environment variables, but a variable
  already set in the real environment wins (Core Tools' rule: it logs "Skipping
  'X' from local.settings.json as it's already defined in current environment
  variables"). When the app has no ``local.settings.json`` the checked-in
  ``local.settings.json.example`` is used instead (a devhost convenience).
* Setting names are looked up exactly, then case-insensitively (the host reads
  settings through .NET configuration, which ignores case).
* ``host.json`` keys are matched case-insensitively for the same reason.
"""
from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, MutableMapping
from pathlib import Path
from typing import Any

SETTINGS_FILE = "local.settings.json"
EXAMPLE_SETTINGS_FILE = "local.settings.json.example"

_SETTING_REF = re.compile(r"%([^%]+)%")
# .NET TimeSpan text: [-][d.]hh:mm[:ss[.fffffff]]
_TIMESPAN = re.compile(r"^(-)?(?:(\d+)\.)?(\d{1,2}):(\d{1,2})(?::(\d{1,2})(?:\.(\d{1,7}))?)?$")


class DevHostError(Exception):
    """A problem that stops the dev host from starting; the message says what to fix."""


class LocalSettings:
    """What ``local.settings.json`` (or its ``.example``) holds."""

    def __init__(self, values: Mapping[str, str], host_section: Mapping[str, Any], path: Path | None):
        self.values = dict(values)
        self.host_section = dict(host_section)
        self.path = path


def read_local_settings(app_root: Path, explicit: Path | None = None) -> LocalSettings:
    """Read ``Values`` and ``Host`` from the settings file (an explicit path must exist)."""
    if explicit is not None:
        path = explicit if explicit.is_absolute() else (Path.cwd() / explicit)
        if not path.is_file():
            raise DevHostError(f"settings file {path} does not exist")
    else:
        found = next((p for p in (app_root / SETTINGS_FILE, app_root / EXAMPLE_SETTINGS_FILE) if p.is_file()), None)
        if found is None:
            return LocalSettings({}, {}, None)
        path = found
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))
    except (OSError, ValueError) as exc:
        raise DevHostError(f"cannot read {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise DevHostError(f"{path} must hold a JSON object")
    if data.get("IsEncrypted") is True:
        raise DevHostError(f"{path} is encrypted (IsEncrypted: true); devhost reads plain-text settings only")
    values = data.get("Values") or {}
    if not isinstance(values, dict):
        raise DevHostError(f"{path}: Values must be an object")
    return LocalSettings({k: _setting_text(v) for k, v in values.items()}, data.get("Host") or {}, path)


def _setting_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def apply_settings(values: Mapping[str, str], environ: MutableMapping[str, str] | None = None) -> list[str]:
    """Export ``values`` into the environment where the name is not set yet; return the names added."""
    environ = os.environ if environ is None else environ
    added = []
    for name, value in values.items():
        if name not in environ:
            environ[name] = value
            added.append(name)
    return added


def lookup_setting(name: str, settings: Mapping[str, str]) -> str | None:
    """A setting's value: exact name first, then ignoring case; None when unset."""
    if name in settings:
        return settings[name]
    folded = name.casefold()
    return next((v for k, v in settings.items() if k.casefold() == folded), None)


def resolve_setting_refs(text: str, settings: Mapping[str, str]) -> str:
    """Replace every ``%NAME%`` in ``text`` with that setting's value (KeyError names a missing one)."""

    def substitute(match: re.Match) -> str:
        value = lookup_setting(match.group(1), settings)
        if value is None:
            raise KeyError(match.group(1))
        return value

    return _SETTING_REF.sub(substitute, text)


def parse_timespan(text: Any, *, what: str, number_unit_seconds: float | None = None) -> float:
    """A .NET TimeSpan (``[d.]hh:mm[:ss[.f]]``) in seconds.

    Plain numbers are accepted only when ``number_unit_seconds`` says what they
    count (host.json ``maxPollingInterval`` takes milliseconds in Functions 2.x+).
    """
    if isinstance(text, (int, float)) and not isinstance(text, bool) and number_unit_seconds is not None:
        return float(text) * number_unit_seconds
    match = _TIMESPAN.match(str(text).strip())
    if not match:
        raise DevHostError(f"{what}: {text!r} is not a time span like 00:00:30")
    sign, days, hours, minutes, seconds, fraction = match.groups()
    if int(hours) > 23 or int(minutes) > 59 or int(seconds or 0) > 59:
        raise DevHostError(f"{what}: {text!r} is not a valid time span")
    total = float(int(days or 0) * 86400 + int(hours) * 3600 + int(minutes) * 60 + int(seconds or 0))
    total += float(f"0.{fraction}") if fraction else 0.0
    return -total if sign else total


def ci_get(mapping: Any, *path: str, default: Any = None) -> Any:
    """``mapping[path[0]][path[1]]...`` matching keys case-insensitively, like .NET configuration."""
    current = mapping
    for key in path:
        if not isinstance(current, Mapping):
            return default
        folded = key.casefold()
        current = next((v for k, v in current.items() if k.casefold() == folded), _MISSING)
        if current is _MISSING:
            return default
    return current


_MISSING = object()


def read_host_json(app_root: Path) -> dict:
    """The app's ``host.json``: required, like the real host (it marks the app root)."""
    path = app_root / "host.json"
    if not path.is_file():
        raise DevHostError(f"{path} not found: --app-root must be the function app folder (the one with host.json)")
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))
    except ValueError as exc:
        raise DevHostError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise DevHostError(f"{path} must hold a JSON object")
    if str(data.get("version", "")) != "2.0":
        # Functions 2.x+ refuses a host.json without it (it would be read with the 1.x schema).
        raise DevHostError(f"{path} must declare \"version\": \"2.0\"")
    return data


def http_route_prefix(host_json: Mapping) -> str:
    """``extensions.http.routePrefix`` without surrounding slashes (default ``api``; ``""`` allowed)."""
    prefix = ci_get(host_json, "extensions", "http", "routePrefix", default="api")
    return str(prefix if prefix is not None else "api").strip("/")

