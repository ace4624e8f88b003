"""Connection secrets (API tokens, webhook signing secrets) encrypted at rest with Fernet.

The key is CRM_SECRETS_KEY when set (a Fernet key: rotate SECRET_KEY without losing tokens), else
derived from SECRET_KEY. Tokens may instead live in an environment variable the connection names:
only one whose name starts with LEADFLOW_CRM_ or is listed in CRM_TOKEN_ENV_ALLOWED, since the
token is sent to the connection's URL (naming SECRET_KEY there would hand it to whoever runs it).
"""

from __future__ import annotations

from django.conf import settings

# Encryption and the environment-name rule are shared with DKIM keys (core/secrets.py).
from core.secrets import SecretUnavailable, decrypt, encrypt, env_name_problem, env_secret

__all__ = ["SecretUnavailable", "connection_token", "decrypt", "encrypt", "token_env_problem"]

TOKEN_ENV_PREFIX = "LEADFLOW_CRM_"  # noqa: S105  a name prefix, not a secret


def token_env_problem(name: str) -> str | None:
    """Why `name` may not hold a CRM token (None: it may)."""
    return env_name_problem(name, prefix=TOKEN_ENV_PREFIX, what="a CRM token",
                            allowed=getattr(settings, "CRM_TOKEN_ENV_ALLOWED", None) or (),
                            allowed_setting="CRM_TOKEN_ENV_ALLOWED")


def connection_token(*, token_env: str, token_encrypted: str) -> str:
    """The API token: the named environment variable wins over the stored one. The name is checked
    again here, so a row saved before the rule (or written by raw SQL) cannot leak another variable."""
    if token_env:
        return env_secret(token_env, problem=token_env_problem(token_env))
    return decrypt(token_encrypted)
