"""Issue 15, item 1: what a customer receives is part of the workflow version. Each version pins
the template revisions it sends; no path (file import, admin template edit, API) changes what
production sends without a promotion. Real parts: the event pipeline, the step runner, the
delivery worker and the SMTP sink."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver

from automation import services
from automation.models import TemplatePin, Workflow
from automation.tests.conftest import advance, deploy, emit, make_contact, version
from campaigns.delivery import delivery_run_batch
from campaigns.models import EmailTemplate, EmailTemplateRevision, Message, MessageStatus
from contacts.api.openapi import openapi_schema

pytestmark = pytest.mark.django_db

OLD = "Our pricing, {{ contact.first_name }}"
DRAFT = "V3 DRAFT SUBJECT - do not send"


def pricing_file(subject: str, *, body: str = "<p>Plans start at 10 EUR.</p>") -> str:
    return yaml.safe_dump({
        "templates": [{"key": "pricing-followup", "subject": subject, "html": body}],
        "workflows": [{"key": "pricing", "name": "Pricing", "trigger": {"type": "event", "event": "pricing_viewed"},
                       "reentry": "always",
                       "steps": [{"id": "followup", "type": "send_email", "template": "pricing-followup"}]}],
    }, sort_keys=False)


def send_to(email: str, sender: Any, **fields: Any) -> None:
    """A contact views the pricing page: the real pipeline enrolls them, the step runner queues
    the email and a delivery batch sends it to the SMTP sink."""
    emit(make_contact(email, first_name="Ada", **fields), "pricing_viewed")
    advance()
    delivery_run_batch(sender=sender)


def subjects(sink: Any, email: str) -> list[str]:
    return [r.header("Subject") for r in sink.received if r.rcpt_tos == [email]]


def test_a_file_imported_to_staging_does_not_change_what_production_sends(sender, sink) -> None:
    # given pricing v1 in production sending "Our pricing"
    workflow = deploy(pricing_file(OLD))
    # when a marketer imports a file "to staging" whose templates: section changes the email
    result = services.workflow_import(text=pricing_file(DRAFT), actor="marketer-ci", to="staging")
    assert [str(v) for v in result.versions] == ["pricing v2 (staging)"]
    assert EmailTemplate.objects.get(key="pricing-followup").subject == DRAFT  # the working copy (draft)
    # then a real contact on production still gets the promoted content
    send_to("real@example.com", sender)
    assert subjects(sink, "real@example.com") == ["Our pricing, Ada"]
    message = Message.objects.get(contact__email="real@example.com")
    assert message.revision == version(workflow, "production").pins.get().revision
    assert message.revision.number == 1
    # ...while the test audience runs staging, which sends the new revision to the staging inbox
    send_to("qa-contact@example.com", sender, is_test=True)
    assert subjects(sink, "qa@leadflow.test") == [f"[STAGING] {DRAFT}"]
    # when the version pinning the new revision is promoted, real contacts get it
    services.workflow_promote(workflow=workflow, actor="test")
    send_to("later@example.com", sender)
    assert subjects(sink, "later@example.com") == [DRAFT]
    # and a rollback brings the earlier content back
    services.workflow_rollback(workflow=workflow, actor="test")
    send_to("after-rollback@example.com", sender)
    assert subjects(sink, "after-rollback@example.com") == ["Our pricing, Ada"]


def test_a_draft_import_that_only_changes_the_email_is_a_new_version() -> None:
    deploy(pricing_file(OLD))
    result = services.workflow_import(text=pricing_file(DRAFT), actor="test")
    assert [str(v) for v in result.versions] == ["pricing v2 (draft)"]  # the steps are the same; the content not
    assert services.workflow_import(text=pricing_file(DRAFT), actor="test").unchanged == result.versions
    revisions = EmailTemplateRevision.objects.filter(template__key="pricing-followup")
    assert sorted(revisions.values_list("number", "subject")) == [(1, OLD), (2, DRAFT)]


def test_an_admin_edit_of_a_template_used_by_production_is_a_draft_revision(sender, sink, role_users) -> None:
    workflow = deploy(pricing_file(OLD))
    template = EmailTemplate.objects.get(key="pricing-followup")
    marketer = Client()
    marketer.force_login(role_users["marketer"])
    # when a marketer edits the subject in the admin
    response = marketer.post(f"/admin/campaigns/emailtemplate/{template.pk}/change/", {
        "key": template.key, "name": "", "kind": "marketing", "subject": DRAFT, "html": template.html, "text": ""})
    assert response.status_code == 302
    revision = EmailTemplateRevision.objects.get(template=template, subject=DRAFT)
    assert (revision.number, revision.created_by, revision.source) == (2, role_users["marketer"], "admin")
    # then production still sends the revision it pins
    send_to("real@example.com", sender)
    assert subjects(sink, "real@example.com") == ["Our pricing, Ada"]
    # the template's preview shows the draft; its page lists the revisions and what pins them
    page = marketer.get(f"/admin/campaigns/emailtemplate/{template.pk}/preview/").content.decode()
    assert DRAFT in page
    page = marketer.get(f"/admin/campaigns/emailtemplate/{template.pk}/change/").content.decode()
    assert "· pinned by pricing v1 (production)</li>" in page
    assert "r2 · " in page
    # a new draft pins the edit; staged and promoted, it is what real contacts get
    draft = services.version_draft_with_latest_templates(workflow=workflow, actor=role_users["marketer"])
    assert draft.pins.get().revision == revision
    services.workflow_stage(version=draft, actor=role_users["marketer"])
    send_to("still-old@example.com", sender)
    assert subjects(sink, "still-old@example.com") == ["Our pricing, Ada"]
    services.workflow_promote(workflow=workflow, actor=role_users["approver"])
    send_to("new@example.com", sender)
    assert subjects(sink, "new@example.com") == [DRAFT]


def test_no_path_changes_what_production_sends_without_a_promotion(sender, sink, role_users) -> None:
    """The issue's acceptance test: a file import, an admin template edit and the API, one after
    the other; a real contact arriving through the API is still sent the promoted content."""
    from contacts.apikeys import api_key_create
    from contacts.models import ApiScope, Event
    from contacts.pipeline import events_process

    workflow = deploy(pricing_file(OLD))
    live = list(version(workflow, "production").pins.values_list("revision_id", flat=True))
    # 1. a file "to staging" changing the email
    services.workflow_import(text=pricing_file(DRAFT), actor=role_users["marketer"], to="staging")
    # 2. an admin edit of the same template
    template = EmailTemplate.objects.get(key="pricing-followup")
    marketer = Client()
    marketer.force_login(role_users["marketer"])
    assert marketer.post(f"/admin/campaigns/emailtemplate/{template.pk}/change/", {
        "key": template.key, "name": "", "kind": "marketing", "subject": "Admin edit", "html": template.html,
        "text": ""}).status_code == 302
    # 3. the API, with every scope: a contact upserted and an event posted for them
    raw = api_key_create(name="site", scopes=ApiScope.values)[1]
    api = Client(HTTP_AUTHORIZATION=f"Bearer {raw}")
    assert api.post("/api/v1/contacts", {"email": "real@example.com", "first_name": "Ada",
                                         "consent_status": "granted"}, content_type="application/json").status_code \
        in (200, 201)
    assert api.post("/api/v1/events", {"events": [{"email": "real@example.com", "type": "pricing_viewed",
                                                   "idempotency_key": "p1"}]},
                    content_type="application/json").status_code in (200, 202)
    events_process(event_ids=list(Event.objects.filter(processed_at__isnull=True).values_list("pk", flat=True)))
    advance()
    delivery_run_batch(sender=sender)
    # production sends what it was promoted with, through all three
    assert subjects(sink, "real@example.com") == ["Our pricing, Ada"]
    assert list(version(workflow, "production").pins.values_list("revision_id", flat=True)) == live
    assert EmailTemplateRevision.objects.filter(template=template).count() == 3  # r1 live, r2 file, r3 admin


def test_no_api_endpoint_writes_templates() -> None:
    """The third path of the issue: the HTTP API. It has no template endpoint (events, contacts,
    bounces, CRM callbacks), so it cannot change what production sends; this fails when one is
    added, so that it is made to create revisions too."""
    def routes(resolver: URLResolver, prefix: str = "") -> list[str]:
        found = []
        for entry in resolver.url_patterns:
            route = prefix + str(entry.pattern)
            if isinstance(entry, URLResolver):
                found += routes(entry, route)
            elif isinstance(entry, URLPattern):
                found.append(route)
        return found

    api = [r for r in routes(get_resolver()) if r.startswith("api/")]
    assert api, "the API's routes were found"
    assert [r for r in api if "template" in r.lower()] == []
    assert "template" not in str(openapi_schema()).lower()


def test_test_sends_and_previews_use_the_draft_and_record_it(sender, sink, role_users) -> None:
    from campaigns.services import message_preview, message_send_test

    deploy(pricing_file(OLD))
    template = EmailTemplate.objects.get(key="pricing-followup")
    template.subject = DRAFT
    template.save()
    contact = make_contact("ada@example.com", first_name="Ada")
    assert message_preview(template=template, contact=contact).subject == DRAFT
    message = message_send_test(template=template, contact=contact, to_email="me@example.com",
                                actor=role_users["marketer"])
    assert message.revision is not None
    assert (message.revision.number, message.revision.subject) == (2, DRAFT)
    delivery_run_batch(sender=sender)
    assert subjects(sink, "me@example.com") == [f"[TEST] {DRAFT}"]


def test_a_revision_that_fails_to_render_for_one_contact_fails_that_message_alone(sender, sink) -> None:
    # renders for the sample contact (so it saves and imports), but not for a contact whose
    # attributes ask floatformat for 500 decimals (campaigns/template_limits.py)
    body = "<p>{% with d=attributes.digits|default:2 %}{{ attributes.price|floatformat:d }}{% endwith %}</p>"
    deploy(pricing_file("Price", body=body))
    emit(make_contact("bad@example.com", attributes={"price": 1.5, "digits": 500}), "pricing_viewed")
    emit(make_contact("good@example.com", attributes={"price": 1.5, "digits": 2}), "pricing_viewed")
    advance()
    delivery_run_batch(sender=sender)
    outcome = dict(Message.objects.values_list("contact__email", "status"))
    assert outcome == {"bad@example.com": MessageStatus.FAILED, "good@example.com": MessageStatus.SENT}
    assert Message.objects.get(contact__email="bad@example.com").reason == "render_error"
    assert "1.50" in sink.received[0].data.decode()


def test_export_carries_the_pinned_revision_and_round_trips() -> None:
    workflow = deploy(pricing_file(OLD))
    services.workflow_import(text=pricing_file(DRAFT), actor="test", to="staging")
    production = services.workflows_export(state="production")
    assert yaml.safe_load(production)["templates"][0]["subject"] == OLD  # pinned, not the draft
    staging = services.workflows_export(state="staging")
    assert yaml.safe_load(staging)["templates"][0]["subject"] == DRAFT
    # importing the staging export again makes nothing new, and exports the same text
    result = services.workflow_import(text=staging, actor="test")
    assert (result.versions, [v.number for v in result.unchanged]) == ([], [2])
    assert services.workflows_export() == staging
    assert TemplatePin.objects.filter(version__workflow=workflow).count() == 2


def test_a_version_without_pins_cannot_be_staged_or_send() -> None:
    workflow = deploy(pricing_file(OLD))
    draft = services.version_create_draft(workflow=workflow, definition=version(workflow, "production").definition,
                                          actor="test")
    TemplatePin.objects.filter(version=draft).delete()  # e.g. a row written by hand
    with pytest.raises(Exception, match="pins no revision of template 'pricing-followup'"):
        services.workflow_stage(version=draft, actor="test")
    assert Workflow.objects.get().versions.filter(state="staging").count() == 0
