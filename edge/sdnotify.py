"""systemd's notification protocol: READY=1, STATUS=, WATCHDOG=1, STOPPING=1.

The whole protocol is one datagram per message to the AF_UNIX socket named in
``$NOTIFY_SOCKET`` (a leading ``@`` names an abstract socket), so it is these
few lines rather than a dependency. Outside systemd (no ``$NOTIFY_SOCKET``)
every call is a no-op that returns False.
"""

from __future__ import annotations

import os
import socket


def notify(state: str) -> bool:
    """Send one notification (e.g. "READY=1\\nSTATUS=serving"); True if it was sent."""
    address = os.environ.get("NOTIFY_SOCKET", "")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
        try:
            s.sendto(state.encode(), address)
        except OSError:
            return False
    return True


def watchdog_interval() -> float | None:
    """Seconds between WATCHDOG=1 pings systemd expects of this process (half of
    WatchdogSec, as sd_watchdog_enabled advises), or None when it expects none."""
    usec = os.environ.get("WATCHDOG_USEC", "")
    pid = os.environ.get("WATCHDOG_PID", "")
    if not usec.isdigit() or (pid and pid != str(os.getpid())):
        return None
    return int(usec) / 1e6 / 2
