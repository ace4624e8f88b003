"""Secrets Leadflow keeps: encrypted at rest with Fernet, or named by an environment variable.

Used by CRM connections (automation/crm/vault.py: API tokens, webhook secrets) and sender
profiles' DKIM keys (campaigns/dkim.py). The key is CRM_SECRETS_KEY when set (a Fernet key, so
SECRET_KEY can rotate without losing stored secrets), else derived from SECRET_KEY.

An environment variable may hold a secret only when its name has the owner's fixed prefix
(LEADFLOW_CRM_, LEADFLOW_DKIM_) or is allow-listed by a setting: the name is typed into the admin,
and naming SECRET_KEY or DATABASE_URL there would hand that value to whatever uses the secret.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
from collections.abc import Iterable

from cryptography.fernet import Fernet, InvalidToken
from django.conf import settings


class SecretUnavailable(Exception):
    """The secret cannot be read (missing or refused variable, or encrypted under another key)."""


def env_name_problem(name: str, *, prefix: str, allowed: Iterable[str] = (), what: str,
                     allowed_setting: str = "") -> str | None:
    """Why the environment variable `name` may not hold `what` (None: it may)."""
    example = f"{prefix}EXAMPLE"
    rule = f"use an environment variable whose name starts with {prefix} (e.g. {example})"
    if allowed_setting:
        rule += f" or one listed in the {allowed_setting} setting"
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
        return f"{name!r} is not an environment variable name: {rule}"
    if (name.startswith(prefix) and len(name) > len(prefix)) or name in set(allowed):
        return None
    return f"{name} may not hold {what}: {rule}"


def env_secret(name: str, *, problem: str | None) -> str:
    """The value of an environment variable already checked by env_name_problem (its `problem`)."""
    if problem:
        raise SecretUnavailable(problem)
    value = os.environ.get(name, "").strip()
    if not value:
        raise SecretUnavailable(f"the environment variable {name} is not set")
    return value


def _fernet() -> Fernet:
    key = getattr(settings, "CRM_SECRETS_KEY", "") or ""
    if not key:
        # The derivation's label predates other secrets than CRM ones; changing it would make every
        # stored secret unreadable.
        digest = hashlib.sha256(b"leadflow.crm.secrets:" + settings.SECRET_KEY.encode("utf-8")).digest()
        key = base64.urlsafe_b64encode(digest).decode("ascii")
    return Fernet(key.encode("ascii"))


def encrypt(plain: str) -> str:
    return _fernet().encrypt(plain.encode("utf-8")).decode("ascii") if plain else ""


def decrypt(token: str) -> str:
    if not token:
        return ""
    try:
        return _fernet().decrypt(token.encode("ascii")).decode("utf-8")
    except InvalidToken:
        raise SecretUnavailable("the stored secret was encrypted under another key (CRM_SECRETS_KEY or "
                                "SECRET_KEY changed); enter it again") from None
