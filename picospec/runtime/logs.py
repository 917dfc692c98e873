"""Logging of the long-running commands (``edge serve``, ``cloud serve``)."""

from __future__ import annotations

import logging
import os


def configure(level: str = "info") -> None:
    """Log lines to stderr with a timestamp, except under systemd, whose journal
    stamps each line itself; aioquic's per-connection INFO lines only at debug."""
    stamp = "" if os.environ.get("JOURNAL_STREAM") else "%(asctime)s "
    logging.basicConfig(level=level.upper(), format=stamp + "%(levelname)s %(name)s: %(message)s")
    if level != "debug":
        logging.getLogger("quic").setLevel(logging.WARNING)
