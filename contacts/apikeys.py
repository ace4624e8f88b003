"""API keys for the event and contact API: created once (the plain key is shown once and only a
SHA-256 hash is stored), found by their prefix, compared in constant time, revoked, never deleted.
Each key has scopes (contacts.models.ApiScope); a new key gets events:write unless told otherwise.

A web process keeps the keys it authenticated for CACHE_SECONDS (issue 18, item 4: the lookup was a
query on every API request). A key revoked or edited through this module, or saved through the ORM,
is dropped from that process's cache at once; other processes (gunicorn workers, replicas) keep
accepting a revoked key, with its old scopes and limit, for at most CACHE_SECONDS."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from django.db import transaction
from django.db.models import Q
from django.db.models.signals import post_save
from django.utils import timezone

from contacts.models import API_KEY_DEFAULT_RATE_PER_MINUTE, ApiKey, api_key_default_scopes
from core.audit import audit_record

KEY_SCHEME = "lf"
PREFIX_BYTES = 5  # 10 hex characters; ApiKey.prefix holds 12
SECRET_BYTES = 32
LAST_USED_RESOLUTION = timedelta(minutes=1)  # last_used_at is written at most once a minute per key
# How long a process trusts a key row it read: the bound on a revocation or scope change made in
# another process. Short, so an operator who revokes a leaked key sees it refused within seconds.
CACHE_SECONDS = 5.0

# prefix -> (when read, on the monotonic clock; the live key row). Only keys that authenticated are
# kept (a guessed prefix adds nothing), so it holds at most the live keys a process has seen.
_cache: dict[str, tuple[float, ApiKey]] = {}


def _now() -> float:
    return time.monotonic()  # tests replace this to step past CACHE_SECONDS


def api_key_cache_clear() -> None:
    """Forget every cached key row of this process (tests; the next request reads the rows again)."""
    _cache.clear()


def _forget(sender: Any, instance: ApiKey, **kwargs: Any) -> None:
    """Drop the key's cached row now and again after COMMIT (a request in between may have read
    the old row back)."""
    _cache.pop(instance.prefix, None)
    transaction.on_commit(lambda: _cache.pop(instance.prefix, None))


post_save.connect(_forget, sender=ApiKey, dispatch_uid="contacts.apikeys.forget")


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
    """The live key whose hash matches `raw`, or None (missing, malformed, unknown, wrong or revoked;
    revoked in another process: within CACHE_SECONDS)."""
    parts = _split(raw or "")
    if parts is None:
        return None
    now = _now()
    cached = _cache.get(parts[0])
    if cached is not None and now - cached[0] < CACHE_SECONDS:
        key: ApiKey | None = cached[1]
    else:
        key = ApiKey.objects.filter(prefix=parts[0], revoked_at__isnull=True).first()
        if key is None:
            _cache.pop(parts[0], None)
    if key is None or not hmac.compare_digest(key.key_hash, hash_key(raw or "")):
        return None
    if cached is None or cached[1] is not key:
        _cache[parts[0]] = (now, key)
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
    _forget(ApiKey, api_key)  # this process refuses it at once; other processes within CACHE_SECONDS
    api_key.revoked_at = now
    audit_record(actor=actor, action="api_key.revoked", target=api_key, data={"name": api_key.name})
    return True
