"""Reads of consent: what was in force when a message was sent, and which queued messages a
contact's topic choices refuse (delivery's suppression check calls topic_refusals)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from django.db.models import Q

from consent.models import ConsentRecord, TopicSubscription

if TYPE_CHECKING:
    from campaigns.models import Message

TOPIC_UNSUBSCRIBED = "topic_unsubscribed"


def message_topic_id(message: Message) -> int | None:
    """The topic the message goes under: its revision's (what the promoted version pins, issue 20),
    else (no revision: a message from before revisions) the template's."""
    revision = message.revision if message.revision_id is not None else None
    if revision is not None:
        return revision.topic_id
    template = message.template
    return getattr(template, "topic_id", None) if template is not None else None


def topic_refusals(messages: Sequence[Message]) -> dict[int, str]:
    """Message id -> "topic_unsubscribed" for marketing messages whose contact left the topic the
    template sends under. One query for the batch."""
    pairs = {(m.contact_id, topic) for m in messages
             if m.kind == "marketing" and not m.internal and (topic := message_topic_id(m)) is not None}
    if not pairs:
        return {}
    condition = Q()
    for contact_id, topic_id in pairs:
        condition |= Q(contact_id=contact_id, topic_id=topic_id)
    left = set(TopicSubscription.objects.filter(condition, subscribed=False).values_list("contact_id", "topic_id"))
    return {m.pk: TOPIC_UNSUBSCRIBED for m in messages
            if m.kind == "marketing" and not m.internal and (m.contact_id, message_topic_id(m)) in left}


def consent_history(*, contact_id: int, limit: int) -> list[ConsentRecord]:
    """The contact's consent history, newest first (the contact page): one query, bounded."""
    return list(ConsentRecord.objects.filter(contact_id=contact_id).select_related("topic", "form")
                .order_by("-at", "-id")[:limit])


def proof_summary(record: ConsentRecord) -> str:
    """The evidence behind a change, in a line: IP, form, the email whose link made it, the proof."""
    parts = [f"IP {record.ip}"] if record.ip else []
    if record.form_id:
        parts.append(f"form {record.form.name if record.form else record.form_id}")
    if record.message_id:
        parts.append(f"email #{record.message_id}")
    parts += [f"{key}: {value}" for key, value in (record.proof or {}).items() if value not in (None, "", [], {})]
    return "; ".join(str(p) for p in parts)[:300]


@dataclass
class ConsentInForce:
    """Why this person got (or did not get) this email."""

    record: ConsentRecord | None  # the last change of marketing consent before the send
    topic_record: ConsentRecord | None  # the last change of the message's topic before the send
    explanation: str


def consent_in_force(message: Message) -> ConsentInForce:
    """The consent records in force when the message was sent (or queued, if not sent yet)."""
    when = message.sent_at or message.created_at
    mine = ConsentRecord.objects.filter(contact_id=message.contact_id, at__lte=when).order_by("-at", "-id")
    record = mine.filter(topic__isnull=True).first()
    topic_id = message_topic_id(message)
    topic_record = mine.filter(topic_id=topic_id).first() if topic_id else None
    if message.kind != "marketing":
        text = "Transactional email: sent without marketing consent."
    elif record is None:
        text = "No consent change is recorded before this email (consent from before the history began)."
    else:
        text = (f"Marketing consent was {record.status} on {record.at:%Y-%m-%d %H:%M} via "
                f"{record.get_source_display()}{f' ({record.detail})' if record.detail else ''}")
        if record.actor:
            text += f" by {record.actor}"
        text += "."
    if topic_id and message.kind == "marketing":
        text += (f" Topic: {topic_record.status} on {topic_record.at:%Y-%m-%d %H:%M} via "
                 f"{topic_record.get_source_display()}." if topic_record
                 else " Topic: never changed (subscribed with marketing consent).")
    return ConsentInForce(record=record, topic_record=topic_record, explanation=text)
