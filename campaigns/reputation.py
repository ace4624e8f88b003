"""Pausing and resuming a sender profile over its reputation (issue 17, item 5).

A sender whose complaint rate opens an incident (core/alerts.py) is paused when
SENDER_AUTO_PAUSE_ON_COMPLAINTS is on: its queue is held, nothing is lost. Both directions are
audited; the operations page shows who paused it and offers Resume.
"""

from __future__ import annotations

from typing import Any

from django.db import transaction

from campaigns.delivery import delivery_kick
from campaigns.models import SenderProfile
from core.audit import audit_record

AUTO_PAUSE_ACTION = "sender.auto_paused"
RESUME_ACTION = "sender.resumed"


def sender_auto_pause(*, sender_id: int, reason: str, detail: dict[str, Any]) -> bool:
    """Pause the sender (if it is not already); returns whether this call paused it."""
    with transaction.atomic():
        paused = SenderProfile.objects.filter(pk=sender_id, is_paused=False).update(is_paused=True)
        if paused:
            audit_record(actor="alerts", action=AUTO_PAUSE_ACTION, target=("campaigns.senderprofile", sender_id),
                         data={"reason": reason, **detail})
    return bool(paused)


def sender_resume(*, sender: SenderProfile, actor: Any) -> bool:
    """Resume a paused sender and wake its queue; returns whether it was paused."""
    with transaction.atomic():
        resumed = SenderProfile.objects.filter(pk=sender.pk, is_paused=True).update(is_paused=False)
        if resumed:
            audit_record(actor=actor, action=RESUME_ACTION, target=sender, data={})
            delivery_kick(sender.pk)  # after COMMIT
    return bool(resumed)
