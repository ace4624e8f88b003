"""Audit helpers (Saleor's events.py idea): one call per state change, explicit at the call site."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db import models

from core.models import AuditEntry


def audit_record(
    *, actor: AbstractBaseUser | AnonymousUser | str | None, action: str, target: models.Model | tuple[str, Any],
    data: dict[str, Any] | None = None,
) -> AuditEntry:
    """Record `action` on `target` (a model instance, or (type label, id) for something gone)."""
    if isinstance(target, models.Model):
        target_type, target_id = target._meta.label_lower, target.pk
    else:
        target_type, target_id = target
    user: Any = actor if isinstance(actor, AbstractBaseUser) else None
    label = actor if isinstance(actor, str) else (user.get_username() if user else "system")
    return AuditEntry.objects.create(
        actor=user, actor_label=label, action=action, target_type=target_type,
        target_id=str(target_id or ""), data=data or {},
    )
