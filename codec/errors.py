"""The picospec exception hierarchy, shared by every package.

Bad input from a user, a config file or the network raises one of these with a
message that names what was wrong; nothing deeper should escape to a caller.
"""

from __future__ import annotations


class PicospecError(Exception):
    """Base class of every error picospec raises on purpose."""


class ConfigError(PicospecError, ValueError):
    """A parameter given by a user or a config file is out of range."""


class CodecError(PicospecError, ValueError):
    """Bytes or arrays that do not form a valid codec object."""


class KernelError(CodecError):
    """A C kernel returned an error status; ``status`` keeps the code."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class ProtocolError(CodecError):
    """A frame or message on the wire breaks the protocol."""
