"""Signup forms and double opt-in (issue 20): a submission upserts the contact, joins lists,
records `form_submitted` and sends a confirmation through the outbox; consent is granted only
by the confirmation link; forged, expired and reused links change nothing and say why; bad
input gets per-field messages; a flood from one address is limited without blocking others."""

from __future__ import annotations

import datetime as dt
import email
import re
from email.message import EmailMessage
from email.policy import default as default_policy

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from campaigns.delivery import delivery_run_batch
from campaigns.models import Message
from consent import optin
from consent.admin import SignupFormAdminForm
from consent.forms_public import embed_html
from consent.models import ConsentRecord, ConsentSource, OptInRequest, OptInStatus, SignupForm, Topic
from contacts.models import ConsentStatus, Contact, ContactList, CustomField, Event

pytestmark = pytest.mark.django_db


@pytest.fixture
def signup(db: None) -> SignupForm:
    CustomField.objects.create(key="plan", label="Plan", field_type="choice", choices=["free", "pro"])
    form = SignupForm.objects.create(slug="newsletter", name="Newsletter", fields=["first_name", "plan"],
                                     success_message="Thanks!")
    form.lists.add(ContactList.objects.create(name="Newsletter"))
    form.topics.add(Topic.objects.create(key="product", name="Product news"))
    return form


def _confirm_path(sink) -> str:  # noqa: ANN001
    """The confirmation link in the last email the sink got (behind the click redirect)."""
    parsed = email.message_from_bytes(sink.received[-1].data, policy=default_policy)
    assert isinstance(parsed, EmailMessage)
    body = parsed.get_body(preferencelist=("html",))
    assert body is not None
    href = re.search(r'href="([^"]+)"[^>]*>Confirm my subscription', body.get_content())
    assert href, body.get_content()
    click = "/" + href.group(1).split("://", 1)[1].split("/", 1)[1]
    redirect = Client().get(click)
    assert redirect.status_code == 302
    return "/" + redirect["Location"].split("://", 1)[1].split("/", 1)[1]


def test_a_submission_is_confirmed_by_email_and_only_then_grants_consent(client: Client, signup, sender,  # noqa: ANN001
                                                                        sink):
    url = reverse("consent:form", args=["newsletter"])
    response = client.post(url, {"email": "Ann@Example.com", "first_name": "Ann", "plan": "pro"},
                           REMOTE_ADDR="198.51.100.7")
    assert response.status_code == 200
    assert b"Thanks!" in response.content
    contact = Contact.objects.get(email="ann@example.com")
    assert (contact.first_name, contact.attributes, contact.consent_status) == ("Ann", {"plan": "pro"}, "unknown")
    assert list(contact.lists.values_list("name", flat=True)) == ["Newsletter"]
    event = Event.objects.get(contact=contact)
    assert (event.event_type, event.properties["form"], event.properties["plan"]) == ("form_submitted", "newsletter",
                                                                                     "pro")
    delivery_run_batch(sender=sender)
    assert sink.received[-1].rcpt_tos == ["ann@example.com"]
    confirm = _confirm_path(sink)

    assert client.get(confirm).status_code == 200  # a mail scanner's GET confirms nothing
    contact.refresh_from_db()
    assert contact.consent_status == ConsentStatus.UNKNOWN
    done = client.post(confirm, REMOTE_ADDR="198.51.100.8")
    assert done.status_code == 200
    assert b"confirmed" in done.content
    contact.refresh_from_db()
    assert contact.consent_status == ConsentStatus.GRANTED
    granted = ConsentRecord.objects.get(contact=contact, status="granted", topic__isnull=True)
    assert granted.source == ConsentSource.CONFIRMATION
    assert granted.form_id == signup.pk
    assert (granted.proof["requested_ip"], granted.proof["confirmed_ip"]) == ("198.51.100.7", "198.51.100.8")
    assert contact.topic_subscriptions.get().subscribed is True

    again = client.post(confirm)
    assert again.status_code == 410
    assert b"works once" in again.content
    assert ConsentRecord.objects.filter(contact=contact, status="granted").count() == 1


def test_a_forged_link_changes_nothing_and_says_so(client: Client, signup, sender, sink):  # noqa: ANN001
    client.post(reverse("consent:form", args=["newsletter"]), {"email": "bo@example.com"})
    request = OptInRequest.objects.get()
    forged = reverse("consent:confirm", args=[f"{request.pk}:forgedsignature"])
    response = client.post(forged)
    assert response.status_code == 404
    assert b"not valid" in response.content
    assert Contact.objects.get().consent_status == ConsentStatus.UNKNOWN
    assert OptInRequest.objects.get().status == OptInStatus.PENDING


def test_unconfirmed_signups_are_reminded_once_then_expire_and_their_link_says_so(
        client: Client, signup, sender, sink):  # noqa: ANN001
    client.post(reverse("consent:form", args=["newsletter"]), {"email": "cy@example.com"})
    request = OptInRequest.objects.get()
    later = timezone.now() + dt.timedelta(days=3)
    assert optin.optin_sweep(now=later).reminded == 1
    assert optin.optin_sweep(now=later).reminded == 0  # once
    assert Message.objects.filter(idempotency_key__startswith=f"optin:{request.pk}:").count() == 2
    link = optin.confirm_url(request.pk)
    result = optin.optin_sweep(now=timezone.now() + dt.timedelta(days=8))
    assert result.expired == 1
    response = client.post("/" + link.split("://", 1)[1].split("/", 1)[1])
    assert response.status_code == 410
    assert b"expired" in response.content
    assert Contact.objects.get().consent_status == ConsentStatus.UNKNOWN


def test_bad_input_gets_a_message_per_field(client: Client, signup):  # noqa: ANN001
    url = reverse("consent:form", args=["newsletter"])
    response = client.post(url, {"email": "not-an-address", "first_name": "x" * 151, "plan": "gold"})
    assert response.status_code == 400
    page = response.content.decode()
    for field in ("email", "first_name", "plan"):
        assert f'id="error-{field}"' in page
    assert not Contact.objects.exists()
    assert client.post(url, data="x" * 20000, content_type="text/plain").status_code == 413


def test_a_filled_honeypot_looks_accepted_and_stores_nothing(client: Client, signup):  # noqa: ANN001
    response = client.post(reverse("consent:form", args=["newsletter"]),
                           {"email": "bot@example.com", "website": "http://spam.example"})
    assert response.status_code == 200
    assert not Contact.objects.exists()


def test_a_flood_from_one_address_is_limited_without_blocking_others(client: Client, signup, sender):  # noqa: ANN001
    url = reverse("consent:form", args=["newsletter"])
    codes = [client.post(url, {"email": f"f{i}@example.com"}, REMOTE_ADDR="192.0.2.1").status_code
             for i in range(15)]
    assert codes[0] == 200
    assert codes[-1] == 429
    assert client.post(url, {"email": "someone@example.com"}, REMOTE_ADDR="192.0.2.2").status_code == 200


def test_a_form_never_redirects_off_the_allowed_hosts(settings, signup):  # noqa: ANN001
    settings.FORM_REDIRECT_HOSTS = ["www.example.com"]
    data = {"name": "N", "slug": "n", "fields": [], "double_opt_in": True, "success_message": "ok", "active": True}
    assert SignupFormAdminForm({**data, "redirect_url": "https://www.example.com/thanks"}).is_valid()
    bad = SignupFormAdminForm({**data, "redirect_url": "https://evil.example.net/x"})
    assert not bad.is_valid()
    assert "FORM_REDIRECT_HOSTS" in str(bad.errors["redirect_url"])


def test_the_embed_snippet_posts_to_the_public_url_with_a_honeypot(signup):  # noqa: ANN001
    snippet = embed_html(signup)
    assert 'action="http' in snippet
    assert "/f/newsletter/" in snippet
    assert 'name="email"' in snippet
    assert 'name="plan"' in snippet
    assert 'name="website"' in snippet
