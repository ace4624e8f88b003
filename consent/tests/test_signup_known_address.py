"""Review of issue 20's signup form: a public form must not change a known contact before its
owner confirms, must see the visitor's IP behind proxies, must not tell whether an address is
known, and makes one pending opt-in request per contact."""

from __future__ import annotations

import pytest
from django.db import IntegrityError, transaction
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from campaigns import tracking
from campaigns.delivery import delivery_run_batch
from campaigns.models import Message
from campaigns.tests.conftest import make_contact, make_template
from consent.models import ConsentRecord, OptInRequest, OptInStatus, SignupForm, Topic, TopicSubscription
from consent.tests.test_forms_optin import _confirm_path, signup  # noqa: F401  (the fixture)
from contacts.models import ConsentStatus, Contact, ContactList, Event

pytestmark = pytest.mark.django_db


def _form_url() -> str:
    return reverse("consent:form", args=["newsletter"])


def test_a_stranger_cannot_resubscribe_a_left_topic_or_change_a_known_contact_until_confirmed(
        client: Client, signup, sender, sink):  # noqa: ANN001, F811
    product = Topic.objects.get(key="product")
    ada = make_contact("ada@example.com", first_name="Ada")  # consent granted
    TopicSubscription.objects.create(contact=ada, topic=product, subscribed=False)  # left in the preference center

    response = client.post(_form_url(), {"email": "ada@example.com", "first_name": "Mallory", "plan": "pro"})
    assert response.status_code == 200
    ada.refresh_from_db()
    assert (ada.first_name, ada.attributes, ada.consent_status) == ("Ada", {}, ConsentStatus.GRANTED)
    assert TopicSubscription.objects.get(contact=ada, topic=product).subscribed is False
    assert not ada.lists.exists()
    assert not Event.objects.filter(contact=ada, event_type="form_submitted").exists()
    assert not ConsentRecord.objects.filter(contact=ada).exists()  # nothing recorded as the contact's choice

    # the owner confirms: now the submission applies, with the confirmation as proof
    delivery_run_batch(sender=sender)
    assert sink.received[-1].rcpt_tos == ["ada@example.com"]
    assert client.post(_confirm_path(sink)).status_code == 200
    ada.refresh_from_db()
    assert (ada.first_name, ada.attributes) == ("Mallory", {"plan": "pro"})
    assert TopicSubscription.objects.get(contact=ada, topic=product).subscribed is True
    assert list(ada.lists.values_list("name", flat=True)) == ["Newsletter"]
    event = Event.objects.get(contact=ada, event_type="form_submitted")
    assert (event.properties["form"], event.properties["first_name"]) == ("newsletter", "Mallory")


def test_a_known_contact_is_held_even_when_the_form_has_no_double_opt_in(client: Client, signup, sender):  # noqa: ANN001, F811
    signup.double_opt_in = False
    signup.save()
    ada = make_contact("ada@example.com", first_name="Ada")
    client.post(_form_url(), {"email": "ada@example.com", "first_name": "Mallory"})
    ada.refresh_from_db()
    assert ada.first_name == "Ada"
    assert not TopicSubscription.objects.filter(contact=ada).exists()
    assert OptInRequest.objects.get(contact=ada).status == OptInStatus.PENDING
    # a new address on this form is still granted at once (today's behaviour)
    client.post(_form_url(), {"email": "new@example.com"})
    assert Contact.objects.get(email="new@example.com").consent_status == ConsentStatus.GRANTED


def test_the_visitors_ip_behind_a_trusted_proxy_is_rate_limited_and_recorded(
        client: Client, signup, sender, settings):  # noqa: ANN001, F811
    settings.TRUSTED_PROXY_COUNT = 1
    proxy = "10.0.0.2"
    for n in range(12):  # 12 visitors behind the one proxy: each has its own bucket (burst 10)
        response = client.post(_form_url(), {"email": f"v{n}@example.com"}, REMOTE_ADDR=proxy,
                               HTTP_X_FORWARDED_FOR=f"203.0.113.{n + 1}")
        assert response.status_code == 200, n
    assert OptInRequest.objects.get(contact__email="v0@example.com").ip == "203.0.113.1"
    assert ConsentRecord.objects.get(contact__email="v0@example.com", status="pending").ip == "203.0.113.1"
    statuses = [client.post(_form_url(), {"email": f"f{n}@example.com"}, REMOTE_ADDR=proxy,
                            HTTP_X_FORWARDED_FOR="198.51.100.66").status_code for n in range(12)]
    assert statuses[-1] == 429  # one visitor's flood is still limited


def test_the_preference_center_records_the_visitors_ip_behind_a_trusted_proxy(
        client: Client, sender, sink, settings):  # noqa: ANN001
    settings.TRUSTED_PROXY_COUNT = 1
    product = Topic.objects.create(key="product", name="Product news")
    contact = make_contact("pat@example.com")
    from campaigns.services import QueueItem, messages_queue

    messages_queue(template=make_template("p1", topic=product), items=[QueueItem(contact.pk, "p1")])
    delivery_run_batch(sender=sender)
    url = "/" + tracking.unsubscribe_url(Message.objects.get().pk).split("://", 1)[1].split("/", 1)[1]
    client.post(url, {"action": "topics"}, REMOTE_ADDR="10.0.0.2", HTTP_X_FORWARDED_FOR="203.0.113.5")
    assert ConsentRecord.objects.get(topic=product, status="unsubscribed").ip == "203.0.113.5"


def test_the_success_page_does_not_tell_whether_an_address_is_known(client: Client, signup, sender):  # noqa: ANN001, F811
    make_contact("known@example.com")  # consent granted
    known = client.post(_form_url(), {"email": "known@example.com"})
    unknown = client.post(_form_url(), {"email": "unknown@example.com"})
    assert known.status_code == unknown.status_code == 200
    assert known.content == unknown.content


def test_one_pending_request_per_contact_and_a_second_form_adds_its_topics(client: Client, signup, sender):  # noqa: ANN001, F811
    other = SignupForm.objects.create(slug="events", name="Events", success_message="Thanks!")
    other.topics.add(Topic.objects.create(key="events", name="Events"))
    other.lists.add(ContactList.objects.create(name="Events list"))
    client.post(_form_url(), {"email": "bo@example.com"})
    client.post(reverse("consent:form", args=["events"]), {"email": "bo@example.com"})
    request = OptInRequest.objects.get()
    assert sorted(Topic.objects.filter(pk__in=request.topic_ids).values_list("key", flat=True)) == \
        ["events", "product"]
    assert Message.objects.filter(idempotency_key__startswith="optin:").count() == 1
    with pytest.raises(IntegrityError), transaction.atomic():  # the database refuses a second one
        OptInRequest.objects.create(contact=request.contact, created_at=timezone.now())
