"""Strict readers for environment settings.

django-environ parses URLs well but treats any unknown boolean as False and any bad
number as a crash without the variable's name. These wrappers fail loudly with an
ImproperlyConfigured that names the variable (healthchecks' `envbool` idea).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import environ
from django.core.exceptions import ImproperlyConfigured

TRUE = {"1", "true", "yes", "on"}
FALSE = {"0", "false", "no", "off", ""}

env = environ.Env()


def read_env_file(path: Path) -> None:
    """Load KEY=VALUE lines from a local .env file; real environment variables win."""
    if path.is_file():
        environ.Env.read_env(str(path), overwrite=False)


def env_str(name: str, default: str | None = None) -> str | None:
    value = os.environ.get(name)
    return default if value is None else value.strip()


def env_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in TRUE:
        return True
    if value in FALSE:
        return False
    raise ImproperlyConfigured(f"{name}={raw!r} is not a boolean (use true/false, 1/0, yes/no, on/off)")


def env_int(name: str, default: int, *, minimum: int | None = None) -> int:
    raw = os.environ.get(name)
    if raw is None or not raw.strip():
        return default
    try:
        value = int(raw.strip())
    except ValueError:
        raise ImproperlyConfigured(f"{name}={raw!r} is not an integer") from None
    if minimum is not None and value < minimum:
        raise ImproperlyConfigured(f"{name}={value} must be >= {minimum}")
    return value


def env_fraction(name: str, default: float) -> float:
    """A number between 0 and 1 (a rate)."""
    raw = os.environ.get(name)
    if raw is None or not raw.strip():
        return default
    try:
        value = float(raw.strip())
    except ValueError:
        raise ImproperlyConfigured(f"{name}={raw!r} is not a number") from None
    if not 0 <= value <= 1:
        raise ImproperlyConfigured(f"{name}={value} must be between 0 and 1")
    return value


def env_list(name: str, default: list[str]) -> list[str]:
    raw = os.environ.get(name)
    if raw is None:
        return default
    return [item.strip() for item in raw.split(",") if item.strip()]


def env_url(name: str, default: str, *, schemes: tuple[str, ...]) -> str:
    raw = (os.environ.get(name) or "").strip() or default
    scheme = raw.split("://", 1)[0] if "://" in raw else ""
    if scheme not in schemes:
        raise ImproperlyConfigured(f"{name}={raw!r}: scheme must be one of {', '.join(schemes)}")
    return raw


def env_database(name: str, default: str) -> dict[str, Any]:
    raw = (os.environ.get(name) or "").strip() or default
    scheme = raw.split("://", 1)[0] if "://" in raw else ""
    if scheme not in {"sqlite", "postgres", "postgresql", "pgsql"}:
        raise ImproperlyConfigured(f"{name}={raw!r}: only sqlite:// and postgres:// URLs are supported")
    try:
        config: dict[str, Any] = env.db_url_config(raw)
    except Exception as exc:  # environ raises assorted errors on malformed URLs
        raise ImproperlyConfigured(f"{name} is malformed: {exc}") from exc
    if scheme != "sqlite" and not config.get("NAME"):
        raise ImproperlyConfigured(f"{name}={raw!r} names no database")
    return config


def env_email(name: str, default: str) -> dict[str, Any]:
    raw = (os.environ.get(name) or "").strip() or default
    scheme = raw.split("://", 1)[0] if "://" in raw else ""
    if scheme not in {"smtp", "smtps", "smtp+tls", "smtp+ssl", "consolemail", "filemail", "memorymail", "dummymail"}:
        raise ImproperlyConfigured(f"{name}={raw!r}: unsupported scheme {scheme!r}")
    try:
        config: dict[str, Any] = env.email_url_config(raw)
    except Exception as exc:
        raise ImproperlyConfigured(f"{name} is malformed: {exc}") from exc
    return config


def env_networks(name: str, default: list[str]) -> list[str]:
    """Comma-separated CIDRs (10.0.0.0/8, 127.0.0.1/32, ::1/128) as normalised strings."""
    import ipaddress

    out = []
    for item in env_list(name, default):
        try:
            out.append(str(ipaddress.ip_network(item, strict=False)))
        except ValueError as exc:
            raise ImproperlyConfigured(f"{name}: {item!r} is not a network (use CIDRs like 10.0.0.0/8): {exc}") \
                from None
    return out


def env_names(name: str, default: list[str]) -> list[str]:
    """Comma-separated environment variable names (letters, digits, underscores)."""
    import re

    names = env_list(name, default)
    for item in names:
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", item):
            raise ImproperlyConfigured(f"{name}: {item!r} is not an environment variable name")
    return names


def env_sns_topics(name: str, default: list[str]) -> list[str]:
    """Comma-separated Amazon SNS topic ARNs (arn:aws:sns:us-east-1:123456789012:ses-bounces)."""
    import re

    topics = env_list(name, default)
    for item in topics:
        if not re.fullmatch(r"arn:aws(-[a-z]+)*:sns:[a-z0-9-]+:\d{12}:[A-Za-z0-9_.-]{1,256}", item):
            raise ImproperlyConfigured(f"{name}: {item!r} is not an SNS topic ARN "
                                       "(like arn:aws:sns:us-east-1:123456789012:ses-bounces)")
    return topics
