"""Double opt-in: a signup without consent gets a confirmation email (through the outbox, so its
sender's throttling, retries and idempotency apply) carrying a signed link; consent is granted
only when the link is followed. Reminded once, expired after CONSENT_OPTIN_EXPIRY_DAYS.

A link that is forged, expired or already used changes nothing and says which (OptInRefused).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.core import signing
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.urls import reverse
from django.utils import timezone

from consent.models import ConsentSource, OptInRequest, OptInStatus, SignupForm, Topic
from consent.services import consent_record, consent_set, topic_set
from contacts.models import ConsentStatus, Contact

_SIGNER = signing.TimestampSigner(salt="leadflow.consent.optin")
TEMPLATE_KEY = "consent-confirmation"
HELD_EVENTS = 20
RACE_RETRIES = 3  # optin_start_many: inserts lost to concurrent signups before giving up
TEMPLATE_HTML = ('<p>Hello {{ contact.first_name|default:"there" }},</p>'
                 "<p>Please confirm that you want to receive our emails:</p>"
                 '<p><a href="{{ data.confirm_url }}">Confirm my subscription</a></p>'
                 "<p>If you did not sign up, ignore this email: you will not hear from us.</p>")


class OptInRefused(ValueError):
    """The link changes nothing; `reason` is a short code, the text says why to the person."""

    def __init__(self, reason: str, text: str) -> None:
        super().__init__(text)
        self.reason = reason


def confirm_url(request_id: int) -> str:
    return settings.SITE_URL.rstrip("/") + reverse("consent:confirm", args=[_SIGNER.sign(str(request_id))])


def _expiry() -> dt.timedelta:
    return dt.timedelta(days=settings.CONSENT_OPTIN_EXPIRY_DAYS)


def confirmation_template() -> Any:
    """The confirmation email's template (transactional: it goes without marketing consent). Made
    on first use; marketers may reword it in the admin, keeping {{ data.confirm_url }}."""
    from campaigns.models import EmailTemplate, MessageKind

    template, _ = EmailTemplate.objects.get_or_create(key=TEMPLATE_KEY, defaults={
        "name": "Double opt-in confirmation", "kind": MessageKind.TRANSACTIONAL,
        "subject": "Please confirm your subscription", "html": TEMPLATE_HTML})
    return template


def _queue_confirmation(request: OptInRequest, *, reminder: bool) -> None:
    from campaigns.services import message_queue

    message_queue(contact=request.contact, template=confirmation_template(), source="double opt-in",
                  idempotency_key=f"optin:{request.pk}:{'reminder' if reminder else 'first'}",
                  context={"confirm_url": confirm_url(request.pk), "reminder": reminder})


@transaction.atomic
def optin_start(*, contact: Contact, form: SignupForm | None, ip: str | None, topic_ids: list[int],
                source: str = ConsentSource.FORM, changes: dict[str, Any] | None = None) -> OptInRequest:
    """Record the pending signup and queue its confirmation email. A second signup while one is
    pending is merged into it (its topics and held changes join; one email, not one per click);
    the partial unique constraint makes two at once one request too."""
    pending = _pending_for_update(contact)
    if pending is None:
        try:
            with transaction.atomic():  # a savepoint: a concurrent submission may win the insert
                request = OptInRequest.objects.create(contact=contact, form=form, source=source, ip=ip,
                                                      topic_ids=sorted(set(topic_ids)), changes=changes or {},
                                                      created_at=timezone.now())
        except IntegrityError:
            pending = _pending_for_update(contact)
            if pending is None:
                raise
        else:
            if contact.consent_status != ConsentStatus.GRANTED:  # granted stays in force until confirmed
                consent_record(contact=contact, status="pending", previous_status=contact.consent_status,
                               source=source, detail=f"confirmation sent (opt-in #{request.pk})", actor="the contact",
                               ip=ip, form_id=form.pk if form else None, proof={"optin_request": request.pk})
            _queue_confirmation(request, reminder=False)
            return request
    pending.topic_ids = sorted(set(pending.topic_ids) | set(topic_ids))
    pending.changes = merge_changes(pending.changes, changes or {})
    pending.save(update_fields=["topic_ids", "changes"])
    return pending


def _pending_for_update(contact: Contact) -> OptInRequest | None:
    return OptInRequest.objects.select_for_update().filter(contact=contact, status=OptInStatus.PENDING).first()


def merge_changes(held: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """A later submission's fields win, lists and events add up (the last HELD_EVENTS events: a
    stranger resubmitting an address must not grow the row without bound)."""
    return {"fields": {**held.get("fields", {}), **new.get("fields", {})},
            "attributes": {**held.get("attributes", {}), **new.get("attributes", {})},
            "list_ids": sorted(set(held.get("list_ids", [])) | set(new.get("list_ids", []))),
            "events": [*held.get("events", []), *new.get("events", [])][-HELD_EVENTS:]}


def optin_start_many(*, contacts: list[tuple[int, str, str]], source: str, actor: str = "",
                     proof: dict[str, Any] | None = None) -> int:
    """optin_start for many contacts at once (an import's "send a confirmation email" basis):
    (id, email, consent status) each; one INSERT each for the requests, their history rows and
    their emails, whatever the count (a query per contact held the import's transaction for
    minutes). The delivery kick leaves after COMMIT (campaigns.services.messages_queue). Contacts
    with a pending request keep it, including one a concurrent signup or import makes meanwhile.
    Returns how many requests were made."""
    from campaigns.services import QueueItem, messages_queue
    from consent.models import ConsentRecord
    from consent.services import _proof
    from contacts.emails import suppression_hash

    now = timezone.now()
    for attempt in range(RACE_RETRIES):
        pending = set(OptInRequest.objects.filter(contact_id__in=[pk for pk, _, _ in contacts],
                                                  status=OptInStatus.PENDING).values_list("contact_id", flat=True))
        todo = [c for c in contacts if c[0] not in pending]
        if not todo:
            return 0
        try:
            with transaction.atomic():  # a savepoint: on a conflict only this insert is undone
                requests = OptInRequest.objects.bulk_create([
                    OptInRequest(contact_id=pk, source=source, created_at=now) for pk, _, _ in todo])
            break
        except IntegrityError:
            # Another transaction made a pending request for one of them after we looked (the
            # partial unique constraint): it has committed now, so looking again leaves it out.
            if attempt == RACE_RETRIES - 1:
                raise
    ConsentRecord.objects.bulk_create([
        ConsentRecord(contact_id=pk, email_hash=suppression_hash(email), status="pending", previous_status=status,
                      source=source, detail=f"confirmation sent (opt-in #{request.pk})", actor=actor[:150],
                      proof=_proof({**(proof or {}), "optin_request": request.pk}), at=now)
        for (pk, email, status), request in zip(todo, requests, strict=True)])
    messages_queue(template=confirmation_template(), source="double opt-in", items=[
        QueueItem(request.contact_id, f"optin:{request.pk}:first",
                  {"confirm_url": confirm_url(request.pk), "reminder": False}) for request in requests])
    return len(requests)


@dataclass
class Confirmed:
    contact: Contact
    form: SignupForm | None


def optin_confirm(*, token: str, ip: str | None) -> Confirmed:
    """Grant consent for a valid, unused, unexpired link; refuse anything else without a write."""
    try:
        value = _SIGNER.unsign(token, max_age=_expiry())
    except signing.SignatureExpired:
        raise OptInRefused("expired", "This confirmation link has expired. Please sign up again.") from None
    except signing.BadSignature:
        raise OptInRefused("invalid", "This confirmation link is not valid. Please use the link from "
                                      "the email itself.") from None
    if not value.isdigit():
        raise OptInRefused("invalid", "This confirmation link is not valid.")
    with transaction.atomic():
        request = OptInRequest.objects.select_related("contact", "form").filter(pk=int(value)).first()
        if request is None:
            raise OptInRefused("invalid", "This confirmation link is not valid.")
        if request.status == OptInStatus.CONFIRMED:
            raise OptInRefused("used", "This address is already confirmed: the link works once.")
        if request.status == OptInStatus.EXPIRED:
            raise OptInRefused("expired", "This confirmation link has expired. Please sign up again.")
        now = timezone.now()
        # Claim: of two clicks at once, one confirms and the other is told it was used.
        if not OptInRequest.objects.filter(pk=request.pk, status=OptInStatus.PENDING).update(
                status=OptInStatus.CONFIRMED, confirmed_at=now):
            raise OptInRefused("used", "This address is already confirmed: the link works once.")
        proof = {"optin_request": request.pk, "requested_at": request.created_at.isoformat(),
                 "requested_ip": request.ip, "confirmed_at": now.isoformat(), "confirmed_ip": ip}
        form_id = request.form_id
        consent_set(contact=request.contact, status=ConsentStatus.GRANTED, source=ConsentSource.CONFIRMATION,
                    detail=f"double opt-in via {request.form.name if request.form else request.source}",
                    actor="the contact", ip=ip, form_id=form_id, proof=proof)
        for topic in Topic.objects.filter(pk__in=request.topic_ids):
            topic_set(contact=request.contact, topic=topic, subscribed=True, source=ConsentSource.CONFIRMATION,
                      actor="the contact", ip=ip, form_id=form_id, proof=proof)
        if request.changes:
            _apply_held_changes(request)
    return Confirmed(contact=request.contact, form=request.form)


def _apply_held_changes(request: OptInRequest) -> None:
    """The confirmed form submission's profile changes, list joins and `form_submitted` events."""
    from contacts.models import ContactList

    contact, held = request.contact, request.changes
    fields = dict(held.get("fields", {}))
    if held.get("attributes"):
        fields["attributes"] = {**contact.attributes, **held["attributes"]}
    if fields:
        from contacts.services import contact_upsert

        try:
            contact, _ = contact_upsert(email=contact.email, consent_via=ConsentSource.CONFIRMATION, **fields)
        except ValidationError:
            pass  # a field rule changed since the submission was checked: consent and lists still apply
    contact.lists.add(*ContactList.objects.filter(pk__in=held.get("list_ids", [])))
    if held.get("events"):
        from consent.forms_public import record_form_submitted

        for props in held["events"]:
            record_form_submitted(contact, props)


@dataclass
class SweepResult:
    reminded: int = 0
    expired: int = 0


def optin_sweep(*, now: dt.datetime | None = None, batch: int = 500) -> SweepResult:
    """Remind unconfirmed signups once (after CONSENT_OPTIN_REMIND_HOURS) and expire them (after
    CONSENT_OPTIN_EXPIRY_DAYS). Claims are conditional UPDATEs, so overlapping runs send one reminder."""
    now = now or timezone.now()
    result = SweepResult()
    pending = OptInRequest.objects.filter(status=OptInStatus.PENDING)
    for request in pending.filter(created_at__lte=now - _expiry()).select_related("contact")[:batch]:
        with transaction.atomic():
            if OptInRequest.objects.filter(pk=request.pk, status=OptInStatus.PENDING).update(
                    status=OptInStatus.EXPIRED):
                consent_record(contact=request.contact, status="expired", previous_status="pending",
                               source=request.source, detail=f"opt-in #{request.pk} never confirmed",
                               proof={"optin_request": request.pk}, at=now)
                result.expired += 1
    remind_before = now - dt.timedelta(hours=settings.CONSENT_OPTIN_REMIND_HOURS)
    for request in pending.filter(created_at__lte=remind_before, reminded_at__isnull=True) \
            .select_related("contact")[:batch]:
        with transaction.atomic():
            if OptInRequest.objects.filter(pk=request.pk, status=OptInStatus.PENDING,
                                           reminded_at__isnull=True).update(reminded_at=now):
                _queue_confirmation(request, reminder=True)
                result.reminded += 1
    return result


def optin_sweep_job() -> dict[str, int]:
    """The scheduled job (config/schedules.py)."""
    result = optin_sweep()
    return {"reminded": result.reminded, "expired": result.expired}
