"""campaigns 0005 and automation 0005 (issue 15) on existing data: each template gets revision 1
with its current content, every existing version pins it, and messages waiting to be rendered
record it; afterwards the production version sends exactly what it sent before. Both databases
(CI runs the suite on SQLite and PostgreSQL)."""

from __future__ import annotations

import pytest
from django.utils import timezone

from core.testing.migrations import applied_models, back_and_forth, migrate  # noqa: F401  (fixture)

BEFORE = [("campaigns", "0004_correlation_id"), ("automation", "0004_steprun_time_indexes")]
AFTER = [("campaigns", "0005_template_revisions"), ("automation", "0005_template_pins")]


@pytest.mark.django_db(transaction=True)
def test_existing_templates_versions_and_queued_messages_keep_their_content(back_and_forth: None) -> None:  # noqa: F811  (the imported fixture)
    migrate(BEFORE)
    old = applied_models()
    template = old.get_model("campaigns", "EmailTemplate").objects.create(
        key="pricing-followup", subject="Our pricing", html="<p>Plans</p>", kind="marketing")
    unused = old.get_model("campaigns", "EmailTemplate").objects.create(key="unused", subject="x", html="<p>x</p>")
    workflow = old.get_model("automation", "Workflow").objects.create(key="pricing", name="Pricing")
    steps = [{"id": "followup", "type": "send_email", "template": "pricing-followup"},
             {"id": "gone", "type": "send_email", "template": "deleted-meanwhile"}]
    version = old.get_model("automation", "WorkflowVersion").objects.create(
        workflow=workflow, number=1, state="production", definition={"key": "pricing", "steps": steps})
    contact = old.get_model("contacts", "Contact").objects.create(email="ada@example.com")
    sender = old.get_model("campaigns", "SenderProfile").objects.create(name="Main", from_email="n@example.com")
    Message = old.get_model("campaigns", "Message")
    queued = Message.objects.create(contact=contact, template=template, sender=sender, idempotency_key="q")
    sent = Message.objects.create(contact=contact, template=template, sender=sender, idempotency_key="s",
                                  status="sent", subject="Our pricing", html="<p>Plans</p>", sent_at=timezone.now())

    migrate(AFTER)
    new = applied_models()
    Revision = new.get_model("campaigns", "EmailTemplateRevision")
    revision = Revision.objects.get(template_id=template.pk)
    assert (revision.number, revision.subject, revision.html, revision.kind, revision.source) == \
        (1, "Our pricing", "<p>Plans</p>", "marketing", "migration")
    assert Revision.objects.filter(template_id=unused.pk).count() == 1
    pins = new.get_model("automation", "TemplatePin").objects.filter(version_id=version.pk)
    assert list(pins.values_list("template_id", "revision_id")) == [(template.pk, revision.pk)]
    Message = new.get_model("campaigns", "Message")
    assert Message.objects.get(pk=queued.pk).revision_id == revision.pk  # renders what it would have
    assert Message.objects.get(pk=sent.pk).revision_id is None  # its content is stored on it

    # and backwards: the tables go, the data before them stays
    migrate(BEFORE)
    assert applied_models().get_model("campaigns", "Message").objects.count() == 2
