"""Settings fail loudly, and production-like settings pass `check --deploy`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PROD_KEY = "x" * 20 + "-production-like-secret-key-with-enough-entropy-9f8e7d6c5b4a"

pytestmark = pytest.mark.slow


def manage(*args: str, env: dict[str, str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k not in {
        "DEBUG", "SECRET_KEY", "DATABASE_URL", "REDIS_URL", "EMAIL_URL", "SITE_URL", "ALLOWED_HOSTS", "LOG_LEVEL",
        "DJANGO_ALLOW_ASYNC_UNSAFE",
    }}
    full = {**base, "DJANGO_SETTINGS_MODULE": "config.settings", "VAR_DIR": str(tmp_path / "var"), "ENV_FILE": ""}
    full.update(env)
    return subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), *args], env=full, cwd=tmp_path,
        capture_output=True, text=True, timeout=120, check=False,
    )


def test_debug_off_without_secret_key_refuses_to_start(tmp_path: Path) -> None:
    result = manage("check", env={"DEBUG": "False"}, tmp_path=tmp_path)
    assert result.returncode != 0
    assert "SECRET_KEY" in result.stderr
    assert "ImproperlyConfigured" in result.stderr


def test_debug_defaults_to_off(tmp_path: Path) -> None:
    result = manage("check", env={}, tmp_path=tmp_path)
    assert result.returncode != 0
    assert "SECRET_KEY is required" in result.stderr


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("DEBUG", "maybe"),
        ("DATABASE_URL", "mysql://u@h/db"),
        ("DATABASE_URL", "postgres://u@h:5432/"),
        ("REDIS_URL", "http://localhost:6379"),
        ("EMAIL_URL", "carrier-pigeon://coop"),
        ("SITE_URL", "ftp://example.com"),
        ("LOG_LEVEL", "LOUD"),
        ("RQ_DEFAULT_TIMEOUT", "ten"),
        ("DELIVERY_STALE_SECONDS", "40"),  # shorter than a batch may hold its claims
        ("EMAIL_REQUIRE_CONSENT", "sometimes"),
        ("ALERT_FAILURE_RATE", "lots"),
    ],
)
def test_bad_values_name_the_variable(tmp_path: Path, name: str, value: str) -> None:
    result = manage("check", env={"DEBUG": "true", name: value}, tmp_path=tmp_path)
    assert result.returncode != 0
    assert f"{name}" in result.stderr.splitlines()[-1], result.stderr[-500:]


def test_check_deploy_is_clean_with_production_like_settings(tmp_path: Path) -> None:
    env = {
        "DEBUG": "false",
        "SECRET_KEY": PROD_KEY,
        "ALLOWED_HOSTS": "leadflow.example.com",
        "SITE_URL": "https://leadflow.example.com",
        "REDIS_URL": "redis://127.0.0.1:6399/0",
        "EMAIL_URL": "smtp+tls://user:pw@smtp.example.com:587",
    }
    result = manage("check", "--deploy", "--fail-level", "WARNING", env=env, tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "no issues" in result.stdout


def test_settings_read_values_from_environment(tmp_path: Path) -> None:
    env = {
        "DEBUG": "false",
        "SECRET_KEY": PROD_KEY,
        "ALLOWED_HOSTS": "a.example, b.example",
        "EMAIL_URL": "smtp://mailer:secret@mail.example:2525",
        "REDIS_URL": "redis://cache.example:6380/2",
        "SITE_URL": "https://leadflow.example.com/",
    }
    code = (
        "from django.conf import settings as s; "
        "print(s.ALLOWED_HOSTS, s.EMAIL_HOST, s.EMAIL_PORT, s.EMAIL_HOST_USER, s.RQ_QUEUES['delivery']['URL'], "
        "s.SITE_URL, s.EMBEDDED_REDIS, s.DEBUG)"
    )
    result = manage("shell", "-c", code, env=env, tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == (
        "['a.example', 'b.example'] mail.example 2525 mailer redis://cache.example:6380/2 "
        "https://leadflow.example.com False False"
    )
