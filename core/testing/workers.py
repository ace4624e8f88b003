"""A real `manage.py worker` process for the tests that SIGKILL one mid-batch (delivery, broadcasts,
tracing): started against the test database, killed with its work horse once the test's condition
holds, never left running."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from django.db import connection

ROOT = Path(__file__).resolve().parents[2]


def database_url() -> str:
    """The test database as DATABASE_URL, for a process of its own."""
    settings = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{settings['NAME']}"
    return f"postgres://{settings['USER']}@{settings['HOST']}:{settings['PORT']}/{settings['NAME']}"


def kill_tree(pid: int) -> None:
    """SIGKILL a worker and its work horse: RQ puts the horse in a process group of its own, so
    killing the worker's group alone would leave the horse sending (as a container stop would not)."""
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    for child in children:
        try:
            os.killpg(int(child), signal.SIGKILL)
        except ProcessLookupError:
            pass
    os.killpg(pid, signal.SIGKILL)


@contextmanager
def worker_process(*queues: str, env: dict[str, str] | None = None) -> Iterator[subprocess.Popen[bytes]]:
    """`manage.py worker <queues>` on the test database (plus `env`); killed on the way out if alive."""
    full_env = {**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings", "DATABASE_URL": database_url(),
                "DEBUG": "true", "ENV_FILE": "", **(env or {})}
    worker = subprocess.Popen([sys.executable, str(ROOT / "manage.py"), "worker", *queues], env=full_env,
                              start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield worker
    finally:
        if worker.poll() is None:
            kill_tree(worker.pid)
            worker.wait()


def kill_when(worker: subprocess.Popen[bytes], ready: Callable[[], bool], *, timeout: float = 60) -> None:
    """Wait until `ready()` (the worker must stay alive meanwhile), then SIGKILL it and its horse.
    The caller asserts where the kill landed (mid-batch), since a timeout also ends the wait."""
    deadline = time.monotonic() + timeout
    while not ready() and time.monotonic() < deadline:
        assert worker.poll() is None, "worker died on its own"
        time.sleep(0.02)
    kill_tree(worker.pid)
    worker.wait()
