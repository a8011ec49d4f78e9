"""Function discovery, loading and invocation, as the host and the Python worker do them.

* Discovery: every direct subfolder of the app root with a ``function.json`` is a
  function named after the folder. ``"disabled": true``, the app setting
  ``AzureWebJobs.<name>.Disabled=true`` and host.json's ``functions`` list are
  honoured, as by the host.
* Loading mirrors the Python worker's loader: the app root is appended to
  ``sys.path`` (last, as the worker does: an installed package of the same name as a
  folder of the app would win) and ``<folder>/__init__.py`` is imported as ``__app__.<folder>``
  (a ``scriptFile`` other than ``__init__.py`` as ``__app__.<folder>.<stem>``),
  so both ``import shared`` and ``from .. import shared`` work as deployed.
  ``entryPoint`` defaults to ``main``. Like the worker, the entry point's
  parameters must match the binding names (plus an optional ``context``).
* Invocation logs one line, in the host's format:
  ``Executed 'Functions.<name>' (Succeeded|Failed, Id=<uuid>, Duration=<n>ms)``.
"""
from __future__ import annotations

import asyncio
import importlib
import importlib.machinery
import importlib.util
import inspect
import json
import logging
import sys
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import azure.functions as func

from .config import DevHostError, lookup_setting, resolve_setting_refs

log = logging.getLogger("devhost")

APP_NAMESPACE = "__app__"  # the Python worker's package for function folders
SUPPORTED_TRIGGERS = {"httptrigger", "queuetrigger", "timertrigger"}
SUPPORTED_OUTPUTS = {"http"}
_NOT_RESOLVED = {"name", "type", "direction"}  # binding properties that never hold %SETTING% references


@dataclass
class FunctionSpec:
    """One function as declared by its ``function.json`` (``%SETTING%`` references resolved)."""

    name: str
    folder: Path
    script_file: Path
    entry_point: str
    bindings: list[dict]

    @property
    def trigger(self) -> dict:
        return next(b for b in self.bindings if str(b.get("type", "")).lower().endswith("trigger"))

    @property
    def trigger_type(self) -> str:
        return str(self.trigger["type"]).lower()

    @property
    def out_bindings(self) -> list[dict]:
        return [b for b in self.bindings if str(b.get("direction", "")).lower() == "out"]


def _is_true(value: Any) -> bool:
    return value is True or (isinstance(value, str) and value.strip().lower() in {"true", "1"})


def discover_functions(app_root: Path, settings: Mapping[str, str],
                       host_json: Mapping) -> tuple[list[FunctionSpec], list[str]]:
    """Read every function folder; return the enabled functions and the problems found."""
    specs: list[FunctionSpec] = []
    problems: list[str] = []
    only = host_json.get("functions")
    only = {str(n).lower() for n in only} if isinstance(only, list) else None
    folders = sorted((p for p in app_root.iterdir() if p.is_dir() and (p / "function.json").is_file()),
                     key=lambda p: p.name.lower())
    for folder in folders:
        name = folder.name
        if only is not None and name.lower() not in only:
            continue
        try:
            data = json.loads((folder / "function.json").read_text(encoding="utf-8-sig"))
        except ValueError as exc:
            problems.append(f"{name}: function.json is not valid JSON: {exc}")
            continue
        if _is_true(data.get("disabled")) or _is_true(lookup_setting(f"AzureWebJobs.{name}.Disabled", settings)):
            log.info("Function '%s' is disabled", name)
            continue
        spec, spec_problems = _read_spec(name, folder, data, settings)
        problems.extend(spec_problems)
        if spec is not None and not spec_problems:
            specs.append(spec)
    return specs, problems


def _read_spec(name: str, folder: Path, data: Mapping,
               settings: Mapping[str, str]) -> tuple[FunctionSpec | None, list[str]]:
    bindings = data.get("bindings")
    if not isinstance(bindings, list) or not all(isinstance(b, dict) for b in bindings):
        return None, [f"{name}: function.json needs a 'bindings' list"]
    problems: list[str] = []
    resolved = []
    for binding in bindings:
        copy = {}
        for key, value in binding.items():
            if isinstance(value, str) and key.lower() not in _NOT_RESOLVED:
                try:
                    value = resolve_setting_refs(value, settings)
                except KeyError as missing:
                    problems.append(f"{name}: binding '{binding.get('name')}' property '{key}' refers to "
                                    f"%{missing.args[0]}%, which is not set in the environment or local.settings.json")
            copy[key] = value
        resolved.append(copy)
    triggers = [b for b in resolved if str(b.get("type", "")).lower().endswith("trigger")]
    if len(triggers) != 1:
        problems.append(f"{name}: function.json must declare exactly one trigger binding, found {len(triggers)}")
    for binding in resolved:
        kind = str(binding.get("type", "")).lower()
        direction = str(binding.get("direction", "")).lower()
        supported = SUPPORTED_TRIGGERS if kind.endswith("trigger") else SUPPORTED_OUTPUTS
        if kind not in supported or (kind == "http" and direction != "out"):
            problems.append(f"{name}: binding type '{binding.get('type')}' (direction {direction or '?'}) "
                            f"is not supported by devhost")
        if not binding.get("name"):
            problems.append(f"{name}: every binding needs a 'name'")
    script = folder / str(data.get("scriptFile") or "__init__.py")
    if not script.is_file():
        problems.append(f"{name}: script file {script} not found")
    spec = FunctionSpec(name=name, folder=folder, script_file=script.resolve(),
                        entry_point=str(data.get("entryPoint") or "main"), bindings=resolved)
    return spec, problems


# --- loading ----------------------------------------------------------------------------------

_import_lock = threading.Lock()


def _install_app_namespace(app_root: Path) -> None:
    root = str(app_root)
    namespace = sys.modules.get(APP_NAMESPACE)
    if namespace is None:
        spec = importlib.machinery.ModuleSpec(APP_NAMESPACE, None, is_package=True)
        spec.submodule_search_locations = []
        namespace = importlib.util.module_from_spec(spec)
        sys.modules[APP_NAMESPACE] = namespace
    if root not in namespace.__path__:
        namespace.__path__.append(root)
    if root not in sys.path:
        sys.path.append(root)


def _module_name(spec: FunctionSpec, app_root: Path) -> str:
    try:
        relative = spec.script_file.relative_to(app_root)
    except ValueError as exc:
        raise DevHostError(f"{spec.name}: scriptFile must be inside the app root") from exc
    if relative.suffix != ".py":
        raise DevHostError(f"{spec.name}: scriptFile must be a .py file, got {relative}")
    parts = list(relative.parts[:-1]) + ([] if relative.stem == "__init__" else [relative.stem])
    return ".".join([APP_NAMESPACE, *parts])


def load_function(spec: FunctionSpec, app_root: Path) -> LoadedFunction:
    """Import the function's script and check its entry point against the bindings."""
    app_root = app_root.resolve()
    module_name = _module_name(spec, app_root)
    with _import_lock:
        _install_app_namespace(app_root)
        existing = sys.modules.get(module_name)
        if existing is not None and Path(getattr(existing, "__file__", "") or "").resolve() != spec.script_file:
            raise DevHostError(f"{spec.name}: module {module_name} is already loaded from {existing.__file__}; "
                               f"two apps in one process need distinct function folder names")
        try:
            module = importlib.import_module(module_name)
        except Exception as exc:  # noqa: BLE001 - any import error is the function's load error
            raise DevHostError(f"{spec.name}: cannot import {module_name}: {type(exc).__name__}: {exc}") from exc
    entry = getattr(module, spec.entry_point, None)
    if not callable(entry):
        raise DevHostError(f"{spec.name}: {spec.script_file.name} has no function '{spec.entry_point}'")
    return LoadedFunction(spec, entry)


# --- invocation -------------------------------------------------------------------------------

class OutValue(func.Out):
    """The value a function sets on a named output binding (``func.Out``)."""

    def __init__(self) -> None:
        self._value: Any = None

    def set(self, val: Any) -> None:
        self._value = val

    def get(self) -> Any:
        return self._value


class InvocationContext(func.Context):
    """The ``context`` argument the Python worker passes to functions that ask for it."""

    def __init__(self, invocation_id: str, spec: FunctionSpec):
        self._invocation_id = invocation_id
        self._spec = spec
        self._local = threading.local()

    @property
    def invocation_id(self) -> str:
        return self._invocation_id

    @property
    def thread_local_storage(self):
        return self._local

    @property
    def function_name(self) -> str:
        return self._spec.name

    @property
    def function_directory(self) -> str:
        return str(self._spec.folder)

    @property
    def trace_context(self):  # distributed tracing is not emulated
        return None

    @property
    def retry_context(self):  # retry policies are not emulated
        return None


@dataclass
class Outcome:
    """What one invocation produced."""

    invocation_id: str
    succeeded: bool
    duration_ms: float
    return_value: Any = None
    outputs: dict[str, Any] = field(default_factory=dict)
    error: BaseException | None = None


class LoadedFunction:
    """A function ready to invoke: its spec and its entry point."""

    def __init__(self, spec: FunctionSpec, entry: Callable):
        self.spec = spec
        self.entry = entry
        self._trigger_name = spec.trigger["name"]
        self._out_names = [b["name"] for b in spec.out_bindings if b["name"] != "$return"]
        binding_names = {b["name"] for b in spec.bindings if b["name"] != "$return"}
        params = set(inspect.signature(entry).parameters)
        self._wants_context = "context" in params and "context" not in binding_names
        # The worker refuses a function whose parameters and bindings differ (FunctionLoadError).
        extra_params = params - binding_names - ({"context"} if self._wants_context else set())
        missing_params = binding_names - params
        if extra_params:
            raise DevHostError(f"{spec.name}: the following parameters are declared in Python but not in "
                               f"function.json: {sorted(extra_params)}")
        if missing_params:
            raise DevHostError(f"{spec.name}: the following parameters are declared in function.json but not in "
                               f"Python: {sorted(missing_params)}")

    def invoke(self, trigger_value: Any) -> Outcome:
        """Call the entry point once; log one line with the outcome. Never raises."""
        invocation_id = str(uuid.uuid4())
        outputs = {name: OutValue() for name in self._out_names}
        kwargs: dict[str, Any] = {self._trigger_name: trigger_value, **outputs}
        if self._wants_context:
            kwargs["context"] = InvocationContext(invocation_id, self.spec)
        started = time.perf_counter()
        try:
            result = self.entry(**kwargs)
            if inspect.iscoroutine(result):
                result = asyncio.run(result)
        except Exception as exc:  # noqa: BLE001 - the host records any failure and carries on
            duration = (time.perf_counter() - started) * 1000
            log.error("Executed 'Functions.%s' (Failed, Id=%s, Duration=%dms) %s: %s", self.spec.name,
                      invocation_id, duration, type(exc).__name__, exc, exc_info=exc)
            return Outcome(invocation_id, False, duration, error=exc)
        duration = (time.perf_counter() - started) * 1000
        log.info("Executed 'Functions.%s' (Succeeded, Id=%s, Duration=%dms)", self.spec.name, invocation_id, duration)
        return Outcome(invocation_id, True, duration, return_value=result,
                       outputs={name: out.get() for name, out in outputs.items()})
