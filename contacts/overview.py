"""Everything the contact page shows about one contact (selector): score and why, a timeline of
events and emails, segments, enrollments with their step, CRM sync state, consent and its history. Each list
is bounded; each is one query."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from contacts.models import Contact

TIMELINE = 30
ROWS = 20


@dataclass(frozen=True)
class TimelineItem:
    at: dt.datetime
    kind: str  # "event" or "email"
    label: str
    detail: str
    url: str = ""


def contact_overview(*, contact: Contact) -> dict[str, Any]:
    from django.urls import reverse

    from automation.crm.models import CrmSyncItem
    from automation.models import Enrollment
    from campaigns.models import Message
    from consent.selectors import consent_history, proof_summary
    from scoring.selectors import lead_score_breakdown

    scored = Contact.objects.with_scores().get(pk=contact.pk)
    breakdown = lead_score_breakdown(contact=scored)
    events = list(contact.events.order_by("-occurred_at", "-id")[:TIMELINE])
    messages = list(Message.objects.filter(contact=contact).select_related("template")
                    .order_by("-created_at", "-id")[:TIMELINE])
    timeline = [TimelineItem(e.occurred_at, "event", e.event_type, _props(e.properties)) for e in events]
    timeline += [TimelineItem(m.sent_at or m.created_at, "email", m.subject or (m.template.key if m.template else "—"),
                              m.get_status_display() + (f" ({m.reason})" if m.reason else ""),
                              reverse("admin:campaigns_message_change", args=[m.pk])) for m in messages]
    timeline.sort(key=lambda item: item.at, reverse=True)
    return {
        "score": scored.score, "grade": scored.grade, "breakdown": breakdown,
        "breakdown_total": round(sum(row.effective for row in breakdown), 1),
        "timeline": timeline[:TIMELINE],
        "segments": list(contact.segment_memberships.select_related("segment").order_by("segment__name")[:ROWS]),
        "enrollments": list(Enrollment.objects.filter(contact=contact).select_related("workflow", "version")
                            .order_by("-entered_at")[:ROWS]),
        "crm_items": list(CrmSyncItem.objects.filter(contact=contact).select_related("connection")[:ROWS]),
        # Newest first: status, source, when, who, proof (issue 20)
        "consent_history": [(r, proof_summary(r)) for r in consent_history(contact_id=contact.pk, limit=ROWS)],
    }


def _props(properties: Any) -> str:
    if not isinstance(properties, dict) or not properties:
        return ""
    return ", ".join(f"{key}={value}" for key, value in list(properties.items())[:5])[:200]
