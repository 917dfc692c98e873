"""Command-line values both sides parse: HOST:PORT addresses and the auth token."""

from __future__ import annotations

import os
from pathlib import Path

from picospec.codec.errors import ConfigError


def host_port(text: str) -> tuple[str, int]:
    """'HOST:PORT' (or '[v6]:PORT') as a pair, with a clear error."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(f"expected HOST:PORT, got {text!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


def auth_token(value: str | None) -> bytes:
    """The shared edge token: the flag, else $PICOSPEC_TOKEN; refuses an empty one."""
    token = value if value is not None else os.environ.get("PICOSPEC_TOKEN", "")
    if not token:
        raise ConfigError("an auth token is required: pass --token or set PICOSPEC_TOKEN")
    return token.encode()


def token_from(token_file: str = "") -> bytes:
    """The shared token of a service: token_file, else the systemd credential named
    "token" ($CREDENTIALS_DIRECTORY/token, from ``LoadCredential=token:...``), else
    the file named by $PICOSPEC_TOKEN_FILE (a container secret), else $PICOSPEC_TOKEN;
    an unreadable or empty file is refused by name."""
    path = token_file
    creds = os.environ.get("CREDENTIALS_DIRECTORY")
    if not path and creds and os.path.lexists(Path(creds) / "token"):
        path = str(Path(creds) / "token")
    path = path or os.environ.get("PICOSPEC_TOKEN_FILE", "")
    if path:
        try:
            token = Path(path).read_text().strip()
        except OSError as e:
            raise ConfigError(f"cannot read the token file {path}: {e.strerror}") from None
        if not token:
            raise ConfigError(f"the token file {path} is empty")
        return token.encode()
    token = os.environ.get("PICOSPEC_TOKEN", "")
    if not token:
        raise ConfigError(
            "an auth token is required: set token_file, a systemd credential named "
            "'token', PICOSPEC_TOKEN_FILE or PICOSPEC_TOKEN"
        )
    return token.encode()
