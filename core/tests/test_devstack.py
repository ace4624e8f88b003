"""`make run`'s stack, for real: migrate, seed, start; the URL answers, a worker is live,
the demo logins work, and Ctrl-C stops everything including the embedded Redis."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import requests
from rq import Worker

from core.testing.pgcluster import free_port

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


@pytest.fixture
def stack_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL", "SECRET_KEY", "EMAIL_URL"}}
    env.update({
        "DJANGO_SETTINGS_MODULE": "config.settings", "DEBUG": "true", "ENV_FILE": "",
        "VAR_DIR": str(tmp_path / "var"), "PYTHONUNBUFFERED": "1",
    })
    return env


def manage(env: dict[str, str], *args: str) -> str:
    result = subprocess.run([sys.executable, str(ROOT / "manage.py"), *args], env=env, capture_output=True,
                            text=True, timeout=180, check=False)
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.fixture
def stack(stack_env: dict[str, str], tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], int, Path]]:
    manage(stack_env, "migrate", "--noinput", "-v0")
    manage(stack_env, "seed_demo")
    port = free_port()
    log = tmp_path / "devstack.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [sys.executable, str(ROOT / "manage.py"), "devstack", "--port", str(port)],
            env=stack_env, stdout=out, stderr=subprocess.STDOUT, text=True, start_new_session=True,
        )
    try:
        yield proc, port, log
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        sock = tmp_path / "var" / "redis.sock"
        if sock.exists():
            try:
                redis.Redis(unix_socket_path=str(sock)).shutdown(nosave=True)
            except redis.ConnectionError:
                pass


def wait_for_banner(log: Path, proc: subprocess.Popen[str], timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = log.read_text()
        if "Leadflow is running at" in text:
            return text
        assert proc.poll() is None, f"devstack exited early:\n{text[-3000:]}"
        time.sleep(0.25)
    pytest.fail(f"no banner within {timeout}s:\n{log.read_text()[-3000:]}")


def test_make_run_stack_serves_works_and_stops_cleanly(stack: tuple[subprocess.Popen[str], int, Path],
                                                       tmp_path: Path) -> None:
    proc, port, log = stack
    banner = wait_for_banner(log, proc)
    url = f"http://127.0.0.1:{port}"
    assert f"{url}/admin/" in banner
    passwords = dict(re.findall(r"^\s+(admin|marketer|approver|sales|ops)\s+(\S+)$", banner, re.M))
    assert set(passwords) == {"admin", "marketer", "approver", "sales", "ops"}

    # the login page answers and the printed demo login works
    session = requests.Session()
    login = session.get(f"{url}/admin/login/", timeout=10)
    assert login.status_code == 200
    response = session.post(
        f"{url}/admin/login/?next=/admin/",
        data={"username": "marketer", "password": passwords["marketer"],
              "csrfmiddlewaretoken": session.cookies["csrftoken"], "next": "/admin/"},
        headers={"Referer": f"{url}/admin/login/"}, timeout=10,
    )
    assert response.status_code == 200
    assert "Contacts" in response.text
    assert "Log out" in response.text
    # Email links and the open pixel follow the port served, not the default 8000 (issue 19).
    preview = session.get(f"{url}/admin/campaigns/emailtemplate/1/preview/", timeout=10)
    assert preview.status_code == 200
    assert f"http://127.0.0.1:{port}/e/" in preview.text
    assert ":8000/" not in preview.text

    # a live worker is registered on the embedded Redis, serving every queue
    conn = redis.Redis(unix_socket_path=str(tmp_path / "var" / "redis.sock"))
    deadline = time.monotonic() + 20
    while not Worker.all(connection=conn) and time.monotonic() < deadline:
        time.sleep(0.25)
    workers = Worker.all(connection=conn)
    assert len(workers) == 1
    assert set(workers[0].queue_names()) == {"default", "events", "delivery", "crm", "imports"}

    # Ctrl-C stops web, worker, scheduler and the embedded Redis
    os.killpg(proc.pid, signal.SIGINT)
    assert proc.wait(timeout=45) == 0, log.read_text()[-3000:]
    assert "Stopped." in log.read_text()
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{url}/admin/login/", timeout=2)
    assert not (tmp_path / "var" / "redis.sock").exists() or not _pings(tmp_path / "var" / "redis.sock")


def _pings(sock: Path) -> bool:
    try:
        return bool(redis.Redis(unix_socket_path=str(sock), socket_connect_timeout=1).ping())
    except (redis.ConnectionError, OSError):
        return False
