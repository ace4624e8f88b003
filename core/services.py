from __future__ import annotations

from typing import Any

from django.utils import timezone

from core.models import Heartbeat


def heartbeat_record(*, name: str, detail: dict[str, Any] | None = None) -> Heartbeat:
    beat, _ = Heartbeat.objects.update_or_create(
        name=name, defaults={"seen_at": timezone.now(), "detail": detail or {}}
    )
    return beat
