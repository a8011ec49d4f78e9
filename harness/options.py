"""Command lines from option dataclasses: each field is one ``--flag`` (underscores become
dashes), typed and defaulted by the field, described by ``field(metadata={"help": …})``."""
from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Sequence
from typing import Any, TypeVar

T = TypeVar("T")


def parse_options(options: type[T], description: str, argv: Sequence[str] | None = None) -> T:
    """Parse ``argv`` into an instance of the dataclass ``options``."""
    parser = argparse.ArgumentParser(description=description,
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    hints = {f.name: f for f in dataclasses.fields(options)}  # type: ignore[arg-type]
    for name, spec in hints.items():
        flag = "--" + name.replace("_", "-")
        meta: dict[str, Any] = {"help": spec.metadata.get("help", ""), "default": spec.default}
        kind = spec.type if isinstance(spec.type, str) else getattr(spec.type, "__name__", "str")
        if kind == "bool":
            parser.add_argument(flag, action="store_true", **meta)
        elif "choices" in spec.metadata:
            parser.add_argument(flag, choices=spec.metadata["choices"], **meta)
        else:
            parser.add_argument(flag, type={"int": int, "float": float}.get(kind, str), **meta)
    return options(**vars(parser.parse_args(argv)))


def option(default: Any, help: str, **metadata: Any) -> Any:
    """A dataclass field with its command-line help."""
    return dataclasses.field(default=default, metadata={"help": help, **metadata})
