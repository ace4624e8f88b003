"""What the point-and-click builders offer (selector): contact fields and custom fields with their
kinds and operators, tags, lists, segments, and the event types seen with their property names.
The builders write the same JSON the compiler reads (docs/segments.md); this only lists choices."""

from __future__ import annotations

from typing import Any

from contacts.models import ContactList, CustomField, Event, Segment, Tag
from contacts.segments.compiler import FIELD_KINDS, OPS_BY_KIND

# Event types the product itself records, offered before any has been seen.
KNOWN_EVENTS: dict[str, list[str]] = {
    "page_view": ["path"], "email_opened": ["template", "message_id"], "email_clicked": ["template", "url"],
    "became_mql": ["score", "grade"], "form_submitted": ["form"],
}
RECENT_EVENTS = 5000  # how many recent events are read for types and property names
MAX_ITEMS = 500  # tags, lists, segments offered


def builder_options(*, exclude_segment: int | None = None) -> dict[str, Any]:
    events: dict[str, set[str]] = {name: set(props) for name, props in KNOWN_EVENTS.items()}
    # Bounded: the newest events (the primary key index), not a scan of the whole table.
    for event_type, properties in Event.objects.order_by("-id").values_list("event_type", "properties")[
            :RECENT_EVENTS]:
        keys = events.setdefault(event_type, set())
        if isinstance(properties, dict):
            keys.update(str(key) for key in list(properties)[:20])
    segments = Segment.objects.order_by("name")
    if exclude_segment is not None:
        segments = segments.exclude(pk=exclude_segment)
    return {
        "fields": [{"name": name, "kind": kind} for name, kind in FIELD_KINDS.items()],
        "attributes": [{"name": f.key, "label": f.label, "kind": f.field_type, "choices": f.choices or []}
                       for f in CustomField.objects.order_by("key")],
        "ops": {kind: list(ops) for kind, ops in OPS_BY_KIND.items()},
        "tags": list(Tag.objects.order_by("name").values_list("name", flat=True)[:MAX_ITEMS]),
        "lists": list(ContactList.objects.order_by("name").values_list("name", flat=True)[:MAX_ITEMS]),
        "segments": [{"id": pk, "name": name} for pk, name in segments.values_list("pk", "name")[:MAX_ITEMS]],
        "events": [{"name": name, "properties": sorted(props)} for name, props in sorted(events.items())],
    }
