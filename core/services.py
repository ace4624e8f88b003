from __future__ import annotations

from typing import Any

from django.utils import timezone

from core.models import Heartbeat


def heartbeat_record(*, name: str, detail: dict[str, Any] | None = None) -> Heartbeat:
    beat, _ = Heartbeat.objects.update_or_create(
        name=name, defaults={"seen_at": timezone.now(), "detail": detail or {}}
    )
    return beat


def switch_paused(name: str) -> bool:
    """Whether a kill switch holds this kind of work (one indexed read; called once per job run)."""
    from core.models import Switch

    return Switch.objects.filter(name=name, paused=True).exists()


def switch_set(*, name: str, paused: bool, actor: Any, reason: str = "") -> bool:
    """Pause or resume a kind of work, audited. Returns whether anything changed. Resuming offers
    the held work again at once (the sweepers would within a minute anyway)."""
    from core.audit import audit_record
    from core.models import Switch

    switch, _ = Switch.objects.get_or_create(name=name)
    if switch.paused == paused:
        return False
    Switch.objects.filter(pk=switch.pk).update(paused=paused, reason=reason[:300], changed_at=timezone.now(),
                                               changed_by=actor if getattr(actor, "pk", None) else None)
    audit_record(actor=actor, action="switch.paused" if paused else "switch.resumed", target=("core.switch", switch.pk),
                 data={"name": name, "reason": reason[:300]})
    if not paused:
        _resume(name)
    return True


def _resume(name: str) -> None:
    if name == "sending":
        from campaigns.delivery import delivery_sweep

        delivery_sweep()
    elif name == "crm_sync":
        from automation.crm.services import crm_sweep

        crm_sweep()
