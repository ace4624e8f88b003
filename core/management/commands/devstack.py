"""`make run`'s process supervisor: web + worker + scheduler (+ embedded Redis), one Ctrl-C."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path
from types import FrameType
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from core import embedded_redis
from core.demo import read_credentials

MANAGE = str(Path(settings.BASE_DIR) / "manage.py")


def public_host(host: str) -> str:
    return "localhost" if host in ("0.0.0.0", "::", "") else host  # noqa: S104  a name to put in links


def child_environment(host: str, port: int, environ: Mapping[str, str]) -> dict[str, str]:
    """The environment of web, workers and scheduler: SITE_URL (email links, the open pixel,
    unsubscribe) follows the port served, unless SITE_URL was set (environment or .env)."""
    environment = dict(environ)
    environment.setdefault("SITE_URL", f"http://{public_host(host)}:{port}")
    return environment


class Command(BaseCommand):
    help = "Run web, worker and scheduler together for local use; Ctrl-C stops all of them."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8000)
        parser.add_argument("--workers", type=int, default=1, help="number of worker processes")
        parser.add_argument("--ready-timeout", type=float, default=60.0)

    def handle(self, *args: Any, **options: Any) -> None:
        # Everything web, workers and scheduler create under VAR_DIR (SQLite journals, uploads,
        # import reports) is the user's alone; the children inherit the umask.
        os.umask(0o077)
        started_redis = False
        if settings.EMBEDDED_REDIS:
            started_redis = embedded_redis.ensure_running(settings.EMBEDDED_REDIS_SOCKET)
        stopping = False

        def request_stop(signum: int, frame: FrameType | None) -> None:
            nonlocal stopping
            stopping = True

        # Ctrl-C, `kill` and a closed terminal all stop the children first: they run in their
        # own sessions, so nobody else will.
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, request_stop)

        host, port = options["host"], options["port"]
        commands = {"web": ["runserver", f"{host}:{port}", "--noreload"], "scheduler": ["scheduler"]}
        for i in range(options["workers"]):
            commands[f"worker{i + 1}"] = ["worker", "--name", f"devstack-worker{i + 1}-{int(time.time())}"]
        # Own process groups: Ctrl-C reaches only us, and we stop the children in order.
        environment = child_environment(host, port, os.environ)
        if environment["SITE_URL"] != f"http://{public_host(host)}:{port}":
            self.stderr.write(f"SITE_URL={environment['SITE_URL']} is set: links and pixels in emails point there, "
                              f"not at port {port}")
        procs = {
            name: subprocess.Popen([sys.executable, MANAGE, *argv], start_new_session=True, env=environment)
            for name, argv in commands.items()
        }
        code = 0
        try:
            url = f"http://{host}:{port}"
            if not self._wait_ready(f"{url}/admin/login/", procs, options["ready_timeout"], lambda: stopping):
                if not stopping:
                    raise CommandError("web did not become ready; see the output above")
            else:
                self._banner(url)
            while not stopping:
                dead = [name for name, p in procs.items() if p.poll() is not None]
                if dead:
                    self.stderr.write(f"{', '.join(dead)} exited unexpectedly; stopping everything")
                    code = 1
                    break
                time.sleep(0.5)
        finally:
            self.stdout.write("Stopping web, workers and scheduler...")
            self._stop(procs)
            if started_redis:
                embedded_redis.stop(settings.EMBEDDED_REDIS_SOCKET)
            self.stdout.write("Stopped.")
        if code:
            sys.exit(code)

    def _wait_ready(
        self, url: str, procs: dict[str, subprocess.Popen[bytes]], timeout: float, stopping: Callable[[], bool]
    ) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not stopping():
            if any(p.poll() is not None for p in procs.values()):
                return False
            try:
                with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310  our own http URL
                    if response.status == 200:
                        return True
            except OSError:
                pass
            time.sleep(0.3)
        return False

    def _banner(self, url: str) -> None:
        lines = [f"Leadflow is running at {url}/admin/", "Logins:"]
        lines += [f"  {user:<9} {password}" for user, password in read_credentials().items()]
        lines += [f"Queues: {url}/admin/rq/   (Ctrl-C stops everything)"]
        width = max(len(line) for line in lines) + 2
        self.stdout.write("=" * width)
        for line in lines:
            self.stdout.write(self.style.SUCCESS(line) if line.startswith("Leadflow") else line)
        self.stdout.write("=" * width)

    def _stop(self, procs: dict[str, subprocess.Popen[bytes]]) -> None:
        for p in procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)  # RQ: warm shutdown, finishes the current job
        deadline = time.monotonic() + 20
        for p in procs.values():
            try:
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
