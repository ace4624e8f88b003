"""Topics and the preference center (issue 20): a template sends under a topic; a contact who
left it is not sent it (suppressed, with the reason); the email's signed link opens a page to
pick topics or leave all; one-click leaves the topic or all, as the topic says."""

from __future__ import annotations

import pytest
from django.test import Client

from campaigns import tracking
from campaigns.delivery import delivery_run_batch
from campaigns.models import Message, MessageStatus
from campaigns.services import QueueItem, messages_queue
from campaigns.tests.conftest import make_contact, make_template
from consent.models import ConsentRecord, ConsentSource, OneClickScope, Topic, TopicSubscription
from contacts.models import ConsentStatus

pytestmark = pytest.mark.django_db


def path_of(url: str) -> str:
    return "/" + url.split("://", 1)[1].split("/", 1)[1]


@pytest.fixture
def topics() -> tuple[Topic, Topic]:
    return (Topic.objects.create(key="product", name="Product news"),
            Topic.objects.create(key="events", name="Events", one_click_scope=OneClickScope.ALL))


def _send(sender, template, contact, key: str) -> Message:  # noqa: ANN001
    messages_queue(template=template, items=[QueueItem(contact.pk, key)])
    delivery_run_batch(sender=sender)
    return Message.objects.get(idempotency_key=key)


def test_the_preference_center_saves_topics_and_delivery_sends_only_the_chosen_one(
        client: Client, sender, sink, topics):  # noqa: ANN001
    product, events = topics
    contact = make_contact("pat@example.com")
    first = _send(sender, make_template("product-1", topic=product), contact, "p1")
    page = client.get(path_of(tracking.unsubscribe_url(first.pk))).content.decode()
    assert "Product news" in page
    assert "Events" in page
    assert 'name="topic" value="product" checked' in page

    response = client.post(path_of(tracking.unsubscribe_url(first.pk)), {"action": "topics", "topic": ["events"]})
    assert response.status_code == 200
    assert b"Your choices are saved" in response.content
    assert dict(TopicSubscription.objects.values_list("topic__key", "subscribed")) == \
        {"product": False, "events": True}
    assert ConsentRecord.objects.filter(topic=product, status="unsubscribed",
                                        source=ConsentSource.PREFERENCES).count() == 1

    product_mail = _send(sender, make_template("product-2", topic=product), contact, "p2")
    events_mail = _send(sender, make_template("events-1", topic=events), contact, "e1")
    assert (product_mail.status, product_mail.reason) == (MessageStatus.SUPPRESSED, "topic_unsubscribed")
    assert events_mail.status == MessageStatus.SENT
    contact.refresh_from_db()
    assert contact.consent_status == ConsentStatus.GRANTED  # leaving a topic is not leaving everything


def test_one_click_leaves_the_topic_or_everything_as_the_topic_is_configured(
        client: Client, sender, sink, topics):  # noqa: ANN001
    product, events = topics
    contact = make_contact("quinn@example.com")
    product_mail = _send(sender, make_template("product-1", topic=product), contact, "p1")
    response = client.post(path_of(tracking.unsubscribe_url(product_mail.pk)), {"List-Unsubscribe": "One-Click"})
    assert response.status_code == 200
    assert b"You left" in response.content
    contact.refresh_from_db()
    assert contact.consent_status == ConsentStatus.GRANTED
    assert TopicSubscription.objects.get(topic=product).subscribed is False

    events_mail = _send(sender, make_template("events-1", topic=events), contact, "e1")
    client.post(path_of(tracking.unsubscribe_url(events_mail.pk)), {"List-Unsubscribe": "One-Click"})
    contact.refresh_from_db()
    assert contact.consent_status == ConsentStatus.WITHDRAWN  # "events" is configured to leave all


def test_unsubscribe_from_all_on_the_page_withdraws_consent(client: Client, sender, sink, topics):  # noqa: ANN001
    contact = make_contact("ray@example.com")
    mail = _send(sender, make_template("product-1", topic=topics[0]), contact, "p1")
    response = client.post(path_of(tracking.unsubscribe_url(mail.pk)), {"action": "all"})
    assert b"You are unsubscribed" in response.content
    contact.refresh_from_db()
    assert contact.consent_status == ConsentStatus.WITHDRAWN


def test_a_templates_new_topic_reaches_production_only_when_a_version_pinning_it_is_promoted(
        sender, sink, topics, role_users):  # noqa: ANN001
    """The topic decides who may receive an email, so it is pinned with the content (issue 15's
    rule): editing the template's topic changes nothing production sends until a promotion, and
    the versioning screen's content diff shows it."""
    from automation import services
    from automation.tests.conftest import advance, deploy, emit
    from automation.tests.test_content_versions import OLD, pricing_file
    from campaigns.models import EmailTemplate
    from campaigns.revisions import template_save

    product, _ = topics
    workflow = deploy(pricing_file(OLD))  # production pins r1: no topic
    left = make_contact("left-product@example.com", first_name="Ada")
    TopicSubscription.objects.create(contact=left, topic=product, subscribed=False)
    template = EmailTemplate.objects.get(key="pricing-followup")
    template.topic = product
    revision = template_save(template=template, actor=role_users["marketer"], source="admin")
    assert (revision.number, revision.topic) == (2, product)

    def send() -> Message:
        emit(left, "pricing_viewed")
        advance()
        delivery_run_batch(sender=sender)
        return Message.objects.filter(contact=left).latest("id")

    # production still sends under r1 (no topic): the contact who left "product" gets it
    first = send()
    assert first.revision is not None
    assert (first.status, first.revision.number) == (MessageStatus.SENT, 1)

    draft = services.version_draft_with_latest_templates(workflow=workflow, actor=role_users["marketer"])
    services.workflow_stage(version=draft, actor=role_users["marketer"])
    approver = Client()
    approver.force_login(role_users["approver"])
    page = approver.get(f"/admin/automation/workflow/{workflow.pk}/versions/").content.decode()
    assert "changed (topic)" in page  # the content diff names the topic change
    assert "+product (Product news)" in page
    services.workflow_promote(workflow=workflow, actor=role_users["approver"])
    second = send()
    assert second.revision is not None
    assert (second.status, second.reason, second.revision.number) == \
        (MessageStatus.SUPPRESSED, "topic_unsubscribed", 2)
