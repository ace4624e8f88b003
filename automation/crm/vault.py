"""Connection secrets (API tokens, webhook signing secrets) encrypted at rest with Fernet.

The key is CRM_SECRETS_KEY when set (a Fernet key: rotate SECRET_KEY without losing tokens), else
derived from SECRET_KEY. Tokens may instead live in an environment variable the connection names:
only one whose name starts with LEADFLOW_CRM_ or is listed in CRM_TOKEN_ENV_ALLOWED, since the
token is sent to the connection's URL (naming SECRET_KEY there would hand it to whoever runs it).
"""

from __future__ import annotations

import base64
import hashlib
import os
import re

from cryptography.fernet import Fernet, InvalidToken
from django.conf import settings

TOKEN_ENV_PREFIX = "LEADFLOW_CRM_"  # noqa: S105  a name prefix, not a secret


class SecretUnavailable(Exception):
    """The token cannot be read (missing or refused variable, or encrypted under another key)."""


def token_env_problem(name: str) -> str | None:
    """Why `name` may not hold a CRM token (None: it may)."""
    rule = (f"use an environment variable whose name starts with {TOKEN_ENV_PREFIX} (e.g. "
            f"{TOKEN_ENV_PREFIX}HUBSPOT_TOKEN) or one listed in the CRM_TOKEN_ENV_ALLOWED setting")
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
        return f"{name!r} is not an environment variable name: {rule}"
    if (name.startswith(TOKEN_ENV_PREFIX) and len(name) > len(TOKEN_ENV_PREFIX)) \
            or name in (getattr(settings, "CRM_TOKEN_ENV_ALLOWED", None) or ()):
        return None
    return f"{name} may not hold a CRM token: {rule}"


def _fernet() -> Fernet:
    key = getattr(settings, "CRM_SECRETS_KEY", "") or ""
    if not key:
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


def connection_token(*, token_env: str, token_encrypted: str) -> str:
    """The API token: the named environment variable wins over the stored one. The name is checked
    again here, so a row saved before the rule (or written by raw SQL) cannot leak another variable."""
    if token_env:
        problem = token_env_problem(token_env)
        if problem:
            raise SecretUnavailable(problem)
        value = os.environ.get(token_env, "").strip()
        if not value:
            raise SecretUnavailable(f"the environment variable {token_env} is not set")
        return value
    return decrypt(token_encrypted)
