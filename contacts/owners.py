"""Lead owners: assigned by hand (one contact or many) or by routing rules when a lead becomes an
MQL. Every change is audited and queued to the CRM like any other contact change; a workflow's
`notify_sales` step with `email: owner` then writes to the owner (automation/engine.py)."""

from __future__ import annotations

from collections.abc import Collection, Iterable
from typing import Any

from django.contrib.auth import get_user_model
from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from contacts.countries import country_code
from contacts.models import Contact, Event, LeadRouting, LeadRoutingRule, SegmentMembership
from core import roles
from core.audit import audit_record


def sales_users() -> QuerySet[Any]:
    """Who may own leads: active staff in the Sales role."""
    return get_user_model().objects.filter(is_active=True, is_staff=True, groups__name=roles.SALES) \
        .order_by("username").distinct()


def contacts_owner_set(*, contact_ids: Collection[int], owner: Any | None, actor: Any, source: str = "admin",
                       only_unowned: bool = False) -> int:
    """Give these contacts to `owner` (None: no owner). Returns how many changed owner.
    `only_unowned`: leave contacts that have an owner by now (routing never overrides a person)."""
    owner_id = owner.pk if owner is not None else None
    with transaction.atomic():
        locked = Contact.objects.select_for_update().filter(pk__in=list(contact_ids))
        if only_unowned:
            locked = locked.filter(owner__isnull=True)
        current = dict(locked.values_list("id", "owner_id"))
        changing = {cid: old for cid, old in current.items() if old != owner_id}
        if not changing:
            return 0
        Contact.objects.filter(pk__in=list(changing)).update(owner_id=owner_id, updated_at=timezone.now())
        for cid, old in changing.items():
            audit_record(actor=actor, action="contact.owner_changed", target=("contacts.contact", cid),
                         data={"from": old, "to": owner_id, "source": source})
        _crm_changed(list(changing))
    return len(changing)


def _crm_changed(contact_ids: list[int]) -> None:
    # The CRM's owner field follows when a connection maps `owner_email` (automation/crm/mapping.py).
    from automation.crm.services import crm_contacts_changed

    crm_contacts_changed(contact_ids=contact_ids, reason="owner")


def rule_matches(rule: LeadRoutingRule, contact: Contact, segment_ids: set[int]) -> bool:
    if rule.match == LeadRouting.COUNTRY:
        return bool(contact.country) and contact.country in rule_countries(rule)
    if rule.match == LeadRouting.SEGMENT:
        return rule.segment_id in segment_ids
    if rule.match == LeadRouting.COMPANY:
        return bool(rule.company_contains) and rule.company_contains.casefold() in contact.company.casefold()
    return True


def rule_countries(rule: LeadRoutingRule) -> set[str]:
    return {country_code(part) for part in rule.countries.split(",") if part.strip()}


def _next_owner(rule: LeadRoutingRule, owners: list[Any]) -> Any:
    """The owner whose turn it is; the cursor moves with a conditional UPDATE (a concurrent worker
    that read the same turn retries with the next one)."""
    while True:
        turn = LeadRoutingRule.objects.filter(pk=rule.pk).values_list("turns", flat=True).get()
        if LeadRoutingRule.objects.filter(pk=rule.pk, turns=turn).update(turns=turn + 1) == 1:
            return owners[turn % len(owners)]


# The event scoring writes when a contact first reaches an MQL band (scoring.services.MQL_EVENT; the
# pipeline calls down to here, so the name is repeated rather than imported from above).
MQL_EVENT = "became_mql"


def leads_route_new_mqls(*, events: Iterable[Event]) -> dict[int, int]:
    """Route the contacts of these events that just became MQLs (the event pipeline calls this
    before workflow triggers, so a notify_sales to the owner finds one)."""
    return leads_route(contact_ids={e.contact_id for e in events if e.event_type == MQL_EVENT})


def leads_route(*, contact_ids: Collection[int]) -> dict[int, int]:
    """Give each of these contacts without an owner to the first active rule that matches it.
    Returns contact id -> owner id for those routed."""
    contacts = list(Contact.objects.filter(pk__in=list(contact_ids), owner__isnull=True))
    if not contacts:
        return {}
    rules = [(rule, list(rule.owners.filter(is_active=True).order_by("username")))
             for rule in LeadRoutingRule.objects.filter(is_active=True).prefetch_related("owners")]
    rules = [(rule, owners) for rule, owners in rules if owners]
    if not rules:
        return {}
    memberships: dict[int, set[int]] = {}
    for cid, sid in SegmentMembership.objects.filter(contact_id__in=[c.pk for c in contacts]) \
            .values_list("contact_id", "segment_id"):
        memberships.setdefault(cid, set()).add(sid)
    routed: dict[int, int] = {}
    for contact in contacts:
        for rule, owners in rules:
            if rule_matches(rule, contact, memberships.get(contact.pk, set())):
                owner = _next_owner(rule, owners)
                if contacts_owner_set(contact_ids=[contact.pk], owner=owner, actor="routing",
                                      source=f"routing rule {rule.name}", only_unowned=True):
                    routed[contact.pk] = owner.pk
                break
    return routed
