"""A ``picospec bench e2e`` results file: reading one back and writing ``e2e.json``.

I/O only, with no plotting or statistics libraries behind it, so that the
simulator's command line can replay a file's traces without them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from picospec.codec.errors import ConfigError

KIND = "picospec bench e2e"
"""The ``kind`` field every results file carries."""
FILENAME = "e2e.json"


def load(path: str | Path) -> dict[str, Any]:
    """The results dict saved at path; a ConfigError naming the path if it is not one."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ConfigError(f"cannot read a bench e2e result from {path}: {e}") from None
    if not isinstance(data, dict) or data.get("kind") != KIND:
        raise ConfigError(f"{path} is not a `{KIND}` result")
    return data


def save(result: dict[str, Any], out: str | Path) -> Path:
    """Write result as ``out/e2e.json``; returns the file's path."""
    path = Path(out) / FILENAME
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1) + "\n")
    return path
