"""API keys for the event and contact API: created once (the plain key is shown once and only a
SHA-256 hash is stored), found by their prefix, compared in constant time, revoked, never deleted.
Each key has scopes (contacts.models.ApiScope); a new key gets events:write unless told otherwise."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from contacts.models import API_KEY_DEFAULT_RATE_PER_MINUTE, ApiKey, api_key_default_scopes
from core.audit import audit_record

KEY_SCHEME = "lf"
PREFIX_BYTES = 5  # 10 hex characters; ApiKey.prefix holds 12
SECRET_BYTES = 32
LAST_USED_RESOLUTION = timedelta(minutes=1)  # last_used_at is written at most once a minute per key


def hash_key(raw: str) -> str:
    return hashlib.sha256(raw.encode("utf-8")).hexdigest()


def _split(raw: str) -> tuple[str, str] | None:
    """`lf_<prefix>_<secret>` -> (prefix, secret); None for anything else."""
    scheme, _, rest = raw.partition("_")
    prefix, _, secret = rest.partition("_")
    if scheme != KEY_SCHEME or not prefix or not secret or len(prefix) > 12:
        return None
    return prefix, secret


@transaction.atomic
def api_key_create(
    *, name: str, created_by: Any = None, rate_limit_per_minute: int = API_KEY_DEFAULT_RATE_PER_MINUTE,
    create_unknown_contacts: bool = True,
    scopes: Sequence[str] | None = None,
) -> tuple[ApiKey, str]:
    """Create a key; returns (row, plain key). The plain key exists only in this return value.
    `scopes` None: events:write only (least access; contacts and bounces must be asked for)."""
    prefix = secrets.token_hex(PREFIX_BYTES)
    while ApiKey.objects.filter(prefix=prefix).exists():  # 1 in 10^12; the unique constraint is the real guard
        prefix = secrets.token_hex(PREFIX_BYTES)
    raw = f"{KEY_SCHEME}_{prefix}_{secrets.token_urlsafe(SECRET_BYTES)}"
    key = ApiKey(
        name=name.strip(), prefix=prefix, key_hash=hash_key(raw), rate_limit_per_minute=rate_limit_per_minute,
        create_unknown_contacts=create_unknown_contacts, created_by=created_by,
        scopes=api_key_default_scopes() if scopes is None else list(scopes),
    )
    key.full_clean()
    key.save()
    audit_record(actor=created_by, action="api_key.created", target=key,
                 data={"name": key.name, "prefix": prefix, "rate_limit_per_minute": rate_limit_per_minute,
                       "scopes": key.scopes})
    return key, raw


EDITABLE = ("rate_limit_per_minute", "create_unknown_contacts", "scopes")


@transaction.atomic
def api_key_update(*, api_key: ApiKey, actor: Any = None, **changes: Any) -> list[str]:
    """Change a key's limit, contact creation or scopes; audited with before and after. Returns
    the names of the fields that changed."""
    unknown = set(changes) - set(EDITABLE)
    if unknown:
        raise ValueError(f"not editable: {', '.join(sorted(unknown))}")
    before = ApiKey.objects.select_for_update().get(pk=api_key.pk)
    changed = [name for name, value in changes.items() if getattr(before, name) != value]
    for name in changed:
        setattr(api_key, name, changes[name])
    if not changed:
        return []
    api_key.full_clean()
    api_key.save(update_fields=changed)
    audit_record(actor=actor, action="api_key.changed", target=api_key,
                 data={name: {"from": getattr(before, name), "to": changes[name]} for name in changed})
    return changed


def api_key_authenticate(raw: str | None) -> ApiKey | None:
    """The live key whose hash matches `raw`, or None (missing, malformed, unknown, wrong or revoked)."""
    parts = _split(raw or "")
    if parts is None:
        return None
    key = ApiKey.objects.filter(prefix=parts[0], revoked_at__isnull=True).first()
    if key is None or not hmac.compare_digest(key.key_hash, hash_key(raw or "")):
        return None
    _touch(key)
    return key


def _touch(key: ApiKey) -> None:
    """Record use at most once a minute: a conditional UPDATE, skipped when the row says it is recent."""
    now = timezone.now()
    stale = now - LAST_USED_RESOLUTION
    if key.last_used_at is not None and key.last_used_at >= stale:
        return
    ApiKey.objects.filter(Q(last_used_at__isnull=True) | Q(last_used_at__lt=stale), pk=key.pk).update(
        last_used_at=now)
    key.last_used_at = now


@transaction.atomic
def api_key_revoke(*, api_key: ApiKey, actor: Any = None) -> bool:
    """Revoke a key at once; False when it was already revoked."""
    now = timezone.now()
    if ApiKey.objects.filter(pk=api_key.pk, revoked_at__isnull=True).update(revoked_at=now) != 1:
        return False
    api_key.revoked_at = now
    audit_record(actor=actor, action="api_key.revoked", target=api_key, data={"name": api_key.name})
    return True
