"""campaigns 0011 (issue 20) on existing data: each revision of a template with a topic takes that
topic (what production sent under until now) and the hash with it, so the template's current
fields still match their revision and saving again makes no new one. Both databases."""

from __future__ import annotations

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from campaigns.models import template_content_hash
from core.testing.migrations import applied_models, back_and_forth, migrate  # noqa: F401  (fixture)

BEFORE = [("campaigns", "0010_template_topic")]
AFTER = [("campaigns", "0011_revision_topic")]


@pytest.mark.django_db(transaction=True)
def test_existing_revisions_take_their_templates_topic(back_and_forth: None) -> None:  # noqa: F811  (the imported fixture)
    migrate(BEFORE)
    old = applied_models()
    topic = old.get_model("consent", "Topic").objects.create(key="product", name="Product news")
    Template = old.get_model("campaigns", "EmailTemplate")
    Revision = old.get_model("campaigns", "EmailTemplateRevision")
    with_topic = Template.objects.create(key="news", subject="News", html="<p>n</p>", topic=topic)
    without = Template.objects.create(key="plain", subject="Plain", html="<p>p</p>")
    for template in (with_topic, without):
        Revision.objects.create(template=template, number=1, kind="marketing", subject=template.subject,
                                html=template.html, text="", content_hash=template_content_hash(
                                    kind="marketing", subject=template.subject, html=template.html, text=""))

    migrate(AFTER)
    new = applied_models().get_model("campaigns", "EmailTemplateRevision")
    moved, kept = new.objects.get(template_id=with_topic.pk), new.objects.get(template_id=without.pk)
    assert (moved.topic_id, kept.topic_id) == (topic.pk, None)
    assert moved.content_hash == template_content_hash(kind="marketing", subject="News", html="<p>n</p>", text="",
                                                       topic_id=topic.pk)
    assert kept.content_hash == template_content_hash(kind="marketing", subject="Plain", html="<p>p</p>", text="")

    migrate(MigrationExecutor(connection).loader.graph.leaf_nodes())
    from campaigns.models import EmailTemplate
    from campaigns.revisions import template_revision_current

    for template in EmailTemplate.objects.all():  # the current fields still match revision 1
        assert template_revision_current(template=template).number == 1
