"""Public signup forms: /f/<slug>/ (a page) and the same form embedded on another site (the
admin shows the HTML snippet). A submission for a new address creates the contact, joins its
lists, records a `form_submitted` event through the event pipeline (scoring and workflow triggers
see it), and either grants consent at once (double_opt_in off) or starts a double opt-in
(consent/optin.py). A submission for a known address changes nothing until confirmed by email
(signup_submit). The visitor sees the same page either way.

Abuse: bodies over MAX_BODY are refused (413); each client IP gets FORM_RATE submissions (a flood
from one address is refused with 429 while everyone else still signs up); a filled honeypot
field gets the success page and nothing is stored. No login and no CSRF cookie: the form is
posted from other sites, and a submission grants nothing without the confirmation email.
"""

from __future__ import annotations

import uuid
from typing import Any
from urllib.parse import urlsplit

from django import forms
from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404, render
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.views.decorators.cache import never_cache
from django.views.decorators.clickjacking import xframe_options_exempt
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_http_methods
from redis.exceptions import RedisError

from campaigns.services import NoSender
from consent import optin
from consent.models import ConsentSource, SignupForm
from consent.services import consent_set, topic_set
from contacts.emails import CanonicalEmailField
from contacts.models import Contact, CustomField, FieldType

MAX_BODY = 16 * 1024
MAX_TEXT = 200  # a custom text field's longest answer on a public form
HONEYPOT = "website"  # hidden from people by CSS; bots fill every field
CONTACT_FIELDS = ("first_name", "last_name", "company", "job_title", "phone", "country")


def form_rate() -> Any:
    from core.throttle import Rate

    # Per client IP: a person (or an office behind one NAT) signs up a few times; a script is slowed
    # to one a minute after the burst. Other addresses have their own buckets.
    return Rate(count=1, period=60, burst=10)


def _label(name: str) -> str:
    return str(getattr(Contact._meta.get_field(name), "verbose_name", name)).capitalize()


def form_field_choices() -> list[tuple[str, str]]:
    builtin = [(name, _label(name)) for name in CONTACT_FIELDS]
    return builtin + [(f.key, f"{f.label} (custom)") for f in CustomField.objects.all()]


def redirect_refusal(url: str) -> str | None:
    """Why a form may not redirect to `url` (None: it may). Only http(s) on SITE_URL's host or a
    host in FORM_REDIRECT_HOSTS: a form is never an open redirect."""
    if not url:
        return None
    parts = urlsplit(url)
    allowed = {urlsplit(settings.SITE_URL).hostname, *settings.FORM_REDIRECT_HOSTS}
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "The redirect must be an absolute http(s) URL."
    if parts.hostname not in allowed:
        return (f"{parts.hostname} is not an allowed redirect host: add it to FORM_REDIRECT_HOSTS "
                f"(allowed now: {', '.join(sorted(h for h in allowed if h))}).")
    return None


def _custom_field(field: CustomField) -> forms.Field:
    kwargs: dict[str, Any] = {"label": field.label, "required": False}
    if field.field_type == FieldType.NUMBER:
        return forms.DecimalField(max_digits=18, decimal_places=6, **kwargs)
    if field.field_type == FieldType.DATE:
        return forms.DateField(**kwargs)
    if field.field_type == FieldType.BOOL:
        return forms.BooleanField(**kwargs)
    if field.field_type == FieldType.CHOICE:
        return forms.ChoiceField(choices=[("", "—"), *((c, c) for c in field.choices)], **kwargs)
    return forms.CharField(max_length=MAX_TEXT, **kwargs)


def signup_django_form(signup: SignupForm, data: Any = None) -> forms.Form:
    """The form's fields: email, the chosen contact and custom fields (their sizes from the model),
    the honeypot."""
    form = forms.Form(data)
    form.fields["email"] = CanonicalEmailField(label="Email", max_length=254)
    custom = {f.key: f for f in CustomField.objects.filter(key__in=signup.fields)}
    for name in signup.fields:
        if name in CONTACT_FIELDS:
            form.fields[name] = forms.CharField(label=_label(name), required=False,
                                                max_length=getattr(Contact._meta.get_field(name), "max_length",
                                                                   MAX_TEXT))
        elif name in custom:
            form.fields[name] = _custom_field(custom[name])
    form.fields[HONEYPOT] = forms.CharField(required=False, label="Leave this empty")
    return form


def _plain(value: Any) -> Any:
    return value.isoformat() if hasattr(value, "isoformat") else (str(value) if value is not None else "")


@transaction.atomic
def signup_submit(*, signup: SignupForm, cleaned: dict[str, Any], ip: str | None) -> Contact:
    """A new address: create the contact, join the form's lists, record `form_submitted`, then
    grant consent (no double opt-in) or send the confirmation email (double opt-in).

    An address already known: anyone can type it, so the submission changes nothing yet. Its
    profile fields, list joins, topics and `form_submitted` event are held in an opt-in request and
    applied only when the address's owner follows the confirmation link (always double opt-in), so
    a stranger can neither re-subscribe a topic the contact left nor rewrite their CRM data."""
    email = cleaned["email"]
    existing = Contact.objects.filter(email=email).first()
    fields: dict[str, Any] = {n: cleaned[n] for n in CONTACT_FIELDS if cleaned.get(n)}
    attributes = {k: _plain(cleaned[k]) for k in signup.fields
                  if k not in CONTACT_FIELDS and cleaned.get(k) not in (None, "")}
    topic_ids = list(signup.topics.values_list("id", flat=True))
    contact = None if existing is not None else _contact_create(
        email, {**fields, "attributes": attributes} if attributes else fields)
    if contact is None:
        # Known, or created by a submission racing this one (a double click, a second tab)
        existing = existing or Contact.objects.get(email=email)
        _validate_held(existing, fields, attributes)
        changes = {"fields": fields, "attributes": attributes,
                   "list_ids": list(signup.lists.values_list("id", flat=True)),
                   "events": [_event_props(signup, cleaned)]}
        optin.optin_start(contact=existing, form=signup, ip=ip, topic_ids=topic_ids, changes=changes)
        return existing
    contact.lists.add(*signup.lists.all())
    record_form_submitted(contact, _event_props(signup, cleaned))
    given = sorted(k for k in cleaned if k != HONEYPOT and cleaned[k] not in ("", None))
    proof = {"form": signup.slug, "fields": given}
    if signup.double_opt_in:
        optin.optin_start(contact=contact, form=signup, ip=ip, topic_ids=topic_ids)
    else:
        consent_set(contact=contact, status="granted", source=ConsentSource.FORM, detail=f"signup form {signup.name}",
                    actor="the contact", ip=ip, form_id=signup.pk, proof=proof)
        for topic in signup.topics.all():
            topic_set(contact=contact, topic=topic, subscribed=True, source=ConsentSource.FORM, actor="the contact",
                      ip=ip, form_id=signup.pk, proof=proof)
    return contact


class _Taken(Exception):  # noqa: N818  control flow: undo the savepoint
    pass


def _contact_create(email: str, fields: dict[str, Any]) -> Contact | None:
    """The contact for a new address, or None when another submission created it since this one
    looked (the unique email constraint, or contact_upsert finding it): the caller then treats the
    address as known. The savepoint undoes whatever this attempt wrote, so the other submission's
    contact is never rewritten by this one."""
    from contacts.services import contact_upsert

    try:
        with transaction.atomic():
            contact, created = contact_upsert(email=email, consent_via=ConsentSource.FORM, **fields)
            if not created:
                raise _Taken
    except (IntegrityError, _Taken):
        return None
    except ValidationError as exc:  # full_clean's unique check saw the other's committed row
        if any(error.code == "unique" for error in getattr(exc, "error_dict", {}).get("email", [])):
            return None
        raise
    return contact


def _validate_held(contact: Contact, fields: dict[str, Any], attributes: dict[str, Any]) -> None:
    """The checks contact_upsert makes, on a copy that is never saved: bad input gets its per-field
    message now, not when the owner confirms."""
    from contacts.countries import country_code

    probe = Contact.objects.get(pk=contact.pk)
    for name, value in fields.items():
        setattr(probe, name, value.strip() if isinstance(value, str) else value)
    if attributes:
        probe.attributes = {**probe.attributes, **attributes}
    try:
        probe.country = country_code(probe.country)
    except ValidationError as exc:
        raise ValidationError({"country": exc.messages}) from exc
    probe.full_clean(validate_unique=False)


def _event_props(signup: SignupForm, cleaned: dict[str, Any]) -> dict[str, Any]:
    return {"form": signup.slug, "form_name": signup.name,
            **{k: _plain(v) for k, v in cleaned.items() if k not in ("email", HONEYPOT) and v not in ("", None)}}


def record_form_submitted(contact: Contact, props: dict[str, Any]) -> None:
    """`form_submitted`, processed by the event pipeline like an API event (scoring, triggers):
    at submission for a new contact, at confirmation for a known one (consent/optin.py)."""
    from contacts.ingest import enqueue_processing
    from contacts.models import Event

    event = Event.objects.create(contact=contact, event_type="form_submitted", properties=props,
                                 occurred_at=timezone.now(), source=f"form:{props.get('form', '')}"[:100],
                                 idempotency_key=f"form:{uuid.uuid4()}")
    enqueue_processing(event_ids=[event.pk])


def _client_ip(request: HttpRequest) -> str:
    from core.login_throttle import client_ip

    # Behind TRUSTED_PROXY_COUNT proxies: the visitor's address, not the proxy's (one rate-limit
    # bucket per visitor; the consent record's proof names the visitor).
    return client_ip(request) or "unknown"


def _ip_refused(ip: str) -> bool:
    from core.throttle import Throttle

    try:
        return not Throttle(f"public:form:ip:{ip}", form_rate()).take(1).granted
    except RedisError:
        return False  # signups must not stop when Redis is down


def embed_html(signup: SignupForm) -> str:
    """The snippet a site pastes: a plain form posting to the public URL (no script)."""
    action = settings.SITE_URL.rstrip("/") + reverse("consent:form", args=[signup.slug])
    django_form = signup_django_form(signup)
    rows = format_html_join("\n", '  <p><label>{}<br><input name="{}" type="{}"{}></label></p>', (
        (f.label, name, "email" if name == "email" else "text", " required" if name == "email" else "")
        for name, f in django_form.fields.items() if name != HONEYPOT))
    return str(format_html(
        '<form method="post" action="{}" accept-charset="utf-8">\n{}\n'
        '  <p style="position:absolute;left:-9999px" aria-hidden="true"><input name="{}" tabindex="-1" '
        'autocomplete="off"></p>\n  <p><button type="submit">Sign up</button></p>\n</form>',
        action, rows, HONEYPOT))


def _content_length(request: HttpRequest) -> int:
    try:
        return int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        return MAX_BODY + 1


@never_cache
@csrf_exempt  # posted from other sites (the embed snippet); a submission grants nothing unconfirmed
@xframe_options_exempt  # the public page may be shown in an iframe on the marketer's site
@require_http_methods(["GET", "POST"])
def signup_view(request: HttpRequest, slug: str) -> HttpResponse:
    signup = get_object_or_404(SignupForm, slug=slug, active=True)
    if request.method == "GET":
        return render(request, "public/signup_form.html", {"signup": signup, "form": signup_django_form(signup)})
    if _content_length(request) > MAX_BODY:
        return HttpResponse("Request too large", status=413, content_type="text/plain")
    ip = _client_ip(request)
    if _ip_refused(ip):
        response = HttpResponse("Too many signups from your address; try again in a minute.", status=429,
                                content_type="text/plain")
        response["Retry-After"] = "60"
        return response
    form = signup_django_form(signup, request.POST)
    if not form.is_valid():
        return render(request, "public/signup_form.html", {"signup": signup, "form": form}, status=400)
    if form.cleaned_data.get(HONEYPOT):
        return _success(request, signup)  # a bot: looks accepted, nothing stored
    try:
        signup_submit(signup=signup, cleaned=form.cleaned_data, ip=ip)
    except NoSender:  # double opt-in needs a sender for its confirmation: nothing is stored
        return HttpResponse("Signups are closed for now: this site has no email sender set up.", status=503,
                            content_type="text/plain")
    except ValidationError as exc:  # a custom field's own rule (contacts/fields.py)
        for field, messages in getattr(exc, "message_dict", {"email": exc.messages}).items():
            form.add_error(field if field in form.fields else None, messages)
        return render(request, "public/signup_form.html", {"signup": signup, "form": form}, status=400)
    return _success(request, signup)


def _success(request: HttpRequest, signup: SignupForm) -> HttpResponse:
    """The same page whatever happened (new address, known one, honeypot): it must not tell a
    visitor whether an address is a known or consented contact."""
    if signup.redirect_url and redirect_refusal(signup.redirect_url) is None:
        return HttpResponseRedirect(signup.redirect_url)
    return render(request, "public/signup_done.html", {"signup": signup, "pending": signup.double_opt_in})


@never_cache
@require_http_methods(["GET", "POST"])
def confirm_view(request: HttpRequest, token: str) -> HttpResponse:
    """GET shows a button (mail scanners follow GETs; they must not confirm); POST confirms."""
    from campaigns.views import _ip_limited, _too_many

    if request.method == "GET":
        return render(request, "public/confirm.html", {"ask": True})
    try:
        confirmed = optin.optin_confirm(token=token, ip=_client_ip(request))
    except optin.OptInRefused as exc:
        if exc.reason == "invalid" and _ip_limited(request):
            return _too_many()
        return render(request, "public/confirm.html", {"refused": str(exc), "reason": exc.reason},
                      status=404 if exc.reason == "invalid" else 410)
    return render(request, "public/confirm.html", {"done": True, "form": confirmed.form})
