"""The filter tree's meaning in plain Python, over a snapshot of one contact.

The reference the compiler is tested against (contacts/tests/test_segment_compiler.py), and a way
to explain one contact ("why is she in this segment?"). It shares only value parsing with the
compiler (contacts.segments.compiler.normalise_value); the matching below is written separately.
Trees are assumed valid (run validate_filter first).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from django.utils import timezone

from contacts.fields import FieldSpec, load_specs
from contacts.models import Contact, Segment
from contacts.segments.compiler import FIELD_KINDS, attribute_kind, normalise_value

Snapshot = dict[str, Any]


def contact_snapshot(contact: Contact) -> Snapshot:
    """Everything a filter can look at, as plain data (a few queries; for tests and explanations)."""
    snapshot: Snapshot = {name: getattr(contact, name) for name in FIELD_KINDS if name != "owner"}
    snapshot["owner"] = contact.owner.username if contact.owner_id and contact.owner else None
    snapshot["attributes"] = dict(contact.attributes or {})
    snapshot["tags"] = set(contact.tags.values_list("name", flat=True))
    snapshot["lists"] = set(contact.lists.values_list("name", flat=True))
    snapshot["events"] = [
        {"event_type": t, "occurred_at": at, "properties": p}
        for t, at, p in contact.events.values_list("event_type", "occurred_at", "properties")
    ]
    return snapshot


def matches(tree: Any, contact: Snapshot, *, now: dt.datetime, specs: Mapping[str, FieldSpec] | None = None,
            segments: Mapping[int, Any] | None = None) -> bool:
    """Whether the snapshot satisfies the tree at `now`.

    specs: custom fields by key (default: from the database); segments: definitions by id for
    {"segment": id} (default: from the database).
    """
    if specs is None:
        specs = load_specs()
    if segments is None:
        segments = dict(Segment.objects.values_list("id", "definition"))
    return _Evaluator(contact, now, specs, segments).node(tree)


class _Evaluator:
    def __init__(self, contact: Snapshot, now: dt.datetime, specs: Mapping[str, FieldSpec],
                 segments: Mapping[int, Any]) -> None:
        self.contact, self.now, self.specs, self.segments = contact, now, specs, segments

    def node(self, tree: dict[str, Any]) -> bool:
        if "all" in tree:
            return all(self.node(child) for child in tree["all"])
        if "any" in tree:
            return any(self.node(child) for child in tree["any"])
        if "not" in tree:
            return not self.node(tree["not"])
        if "field" in tree:
            kind = FIELD_KINDS[tree["field"]]
            return self.value_matches(self.contact.get(tree["field"]), tree, kind, None)
        if "attribute" in tree:
            spec = self.specs[tree["attribute"]]
            kind = attribute_kind(spec)
            value = self.contact.get("attributes", {}).get(tree["attribute"])
            return self.value_matches(_typed(value, kind), tree, kind, spec)
        if "tag" in tree:
            return tree["tag"] in self.contact.get("tags", set())
        if "list" in tree:
            return tree["list"] in self.contact.get("lists", set())
        if "event" in tree:
            return self.event(tree)
        if "segment" in tree:
            return self.node(self.segments[tree["segment"]])
        raise ValueError(f"not a filter node: {tree!r}")

    def event(self, tree: dict[str, Any]) -> bool:
        days = tree.get("within_days")
        wanted = tree.get("properties", {})
        count = 0
        for event in self.contact.get("events", []):
            if event["event_type"] != tree["event"]:
                continue
            if days is not None and not self.now - dt.timedelta(days=days) <= event["occurred_at"] <= self.now:
                continue
            if all(_same_json(event["properties"].get(k, _MISSING), v) for k, v in wanted.items()):
                count += 1
        return (count >= tree.get("min_count", 1)) == tree.get("did", True)

    def value_matches(self, value: Any, tree: dict[str, Any], kind: str, spec: FieldSpec | None) -> bool:
        op = tree["op"]
        if op in ("neq", "not_in", "is_empty"):
            positive = {"neq": "eq", "not_in": "in", "is_empty": "is_set"}[op]
            return not self.value_matches(value, {**tree, "op": positive}, kind, spec)
        if value is None or (value == "" and kind in ("text", "choice")):
            return False  # every positive op needs a value
        if op == "is_set":
            return True
        if op == "within_days":
            if kind == "date":
                today = timezone.localdate(self.now)
                return (today - dt.timedelta(days=tree["value"])).isoformat() <= value <= today.isoformat()
            return self.now - dt.timedelta(days=tree["value"]) <= value <= self.now
        if op == "in":
            targets = [normalise_value(kind, v, spec) for v in tree["value"]]
        else:
            targets = [normalise_value(kind, tree["value"], spec)]
        if kind in ("text", "choice"):
            value, targets = value.lower(), [t.lower() for t in targets]
        target = targets[0]
        if op in ("eq", "in"):
            return any(value == t for t in targets)
        if op == "contains":
            return target in value
        if op == "startswith":
            return bool(value.startswith(target))
        return bool({"gt": value > target, "gte": value >= target, "lt": value < target,
                     "lte": value <= target}[op])


_MISSING = object()


def _typed(value: Any, kind: str) -> Any:
    """A stored attribute value of the field's JSON type, or None (text in a number field is no number)."""
    if kind == "number":
        return value if isinstance(value, int | float) and not isinstance(value, bool) else None
    if kind == "bool":
        return value if isinstance(value, bool) else None
    return value if isinstance(value, str) else None


def _same_json(stored: Any, wanted: Any) -> bool:
    """JSON equality: true is not 1, "1" is not 1."""
    if isinstance(wanted, bool) or isinstance(stored, bool):
        return isinstance(wanted, bool) and isinstance(stored, bool) and stored == wanted
    if isinstance(wanted, int | float):
        return isinstance(stored, int | float) and stored == wanted
    return isinstance(stored, str) and stored == wanted
