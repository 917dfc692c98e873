"""Configuration files of both sides: TOML sections checked against dataclass fields.

``load_sections(path, {"edge": EdgeConfig, ...})`` reads the file with the
standard library's tomllib and refuses, naming the file, the key and what was
expected: an unknown section or key, a value of the wrong type (an integer is
accepted where a number is expected). Each section's dataclass fields, with
their type hints, are the schema; the values come back per section, for the
caller to build its dataclass (whose own checks then run).
"""

from __future__ import annotations

import tomllib
import typing
from collections.abc import Mapping
from dataclasses import fields, replace
from pathlib import Path
from typing import Any, TypeVar

from picospec.codec.errors import ConfigError

C = TypeVar("C")


def load_sections(
    path: str | Path, schema: Mapping[str, tuple[type, frozenset[str] | None]]
) -> dict[str, dict[str, Any]]:
    """Values per section of a TOML file. schema maps a section name to (its
    dataclass, the field names the section holds, None for all of them)."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except OSError as e:
        raise ConfigError(f"cannot read the config file {path}: {e.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from None
    names = " and ".join(f"[{s}]" for s in schema)
    out: dict[str, dict[str, Any]] = {s: {} for s in schema}
    for section, body in data.items():
        if section not in schema:
            raise ConfigError(f"{path}: unknown section [{section}]; sections are {names}")
        if not isinstance(body, dict):
            raise ConfigError(f"{path}: [{section}] must be a table")
        cls, only = schema[section]
        hints = typing.get_type_hints(cls)
        keys = only if only is not None else frozenset(f.name for f in fields(cls))
        for key, value in body.items():
            if key not in keys:
                known = ", ".join(sorted(keys))
                raise ConfigError(f"{path}: unknown key {section}.{key}; [{section}] has {known}")
            out[section][key] = _checked(path, f"{section}.{key}", hints[key], value)
    return out


def _checked(path: Path, name: str, want: Any, value: Any) -> Any:
    if want is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, want) and not (want is int and isinstance(value, bool)):
        return value
    kind = {str: "a string", int: "an integer", float: "a number", bool: "true or false"}
    raise ConfigError(
        f"{path}: {name} must be {kind.get(want, str(want))}, got {type(value).__name__} {value!r}"
    )


def overridden(config: C, values: Mapping[str, Any]) -> C:
    """config (a dataclass) with the given fields replaced, flags over the file:
    None values (a flag not given) leave the field as it was."""
    return replace(config, **{k: v for k, v in values.items() if v is not None})  # type: ignore[type-var]
