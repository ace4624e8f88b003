"""Connection secrets (API tokens, webhook signing secrets) encrypted at rest with Fernet.

The key is CRM_SECRETS_KEY when set (a Fernet key: rotate SECRET_KEY without losing tokens), else
derived from SECRET_KEY. Tokens may instead live in an environment variable the connection names.
"""

from __future__ import annotations

import base64
import hashlib
import os

from cryptography.fernet import Fernet, InvalidToken
from django.conf import settings


class SecretUnavailable(Exception):
    """The token cannot be read (missing variable, or encrypted under another key)."""


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
    """The API token: the named environment variable wins over the stored one."""
    if token_env:
        value = os.environ.get(token_env, "").strip()
        if not value:
            raise SecretUnavailable(f"the environment variable {token_env} is not set")
        return value
    return decrypt(token_encrypted)
