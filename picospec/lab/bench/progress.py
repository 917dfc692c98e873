"""A one-line progress bar on stderr (no dependency): done/total, elapsed, a label."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    def __init__(self, total: int, *, label: str = "", stream: TextIO | None = None) -> None:
        self.total = max(total, 1)
        self.done = 0
        self.label = label
        self.stream = stream or sys.stderr
        self.t0 = time.perf_counter()
        self._tty = self.stream.isatty()

    def step(self, what: str = "") -> None:
        """One unit done; what says which."""
        self.done += 1
        elapsed = time.perf_counter() - self.t0
        eta = elapsed / self.done * (self.total - self.done)
        filled = int(30 * self.done / self.total)
        bar = "#" * filled + "." * (30 - filled)
        line = (
            f"{self.label} [{bar}] {self.done}/{self.total} "
            f"{elapsed:5.0f}s elapsed, ~{eta:4.0f}s left  {what}"
        )
        if self._tty:
            self.stream.write("\r" + line[:160].ljust(160))
            if self.done >= self.total:
                self.stream.write("\n")
        elif self.done == self.total or self.done % max(1, self.total // 20) == 0:
            self.stream.write(line + "\n")  # a log, not a terminal: every 5%
        self.stream.flush()
