"""Jobs of the core app. Jobs are thin: they take plain arguments and call a service."""

from __future__ import annotations

import os
import socket

from core.services import heartbeat_record


def heartbeat(name: str = "scheduler") -> None:
    """Periodic proof that scheduler, Redis and a worker all work (see config/schedules.py)."""
    heartbeat_record(name=name, detail={"host": socket.gethostname(), "pid": os.getpid()})


def alerts_check() -> dict[str, int]:
    """Scheduled every minute (config/schedules.py): open, notify and resolve incidents."""
    from core.alerts import alerts_check as check

    return check()
