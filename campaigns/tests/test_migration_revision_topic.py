"""campaigns 0011 (issue 20) on existing data: each revision of a template with a topic takes that
topic (what production sent under until now) and the hash with it, so the template's current
fields still match their revision and saving again makes no new one. Both databases."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from campaigns.models import template_content_hash

BEFORE = [("campaigns", "0010_template_topic")]
AFTER = [("campaigns", "0011_revision_topic")]


def migrate(targets: list[tuple[str, str]]) -> None:
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(targets)


def applied_models():  # noqa: ANN201  the historical apps of what is applied now
    return MigrationExecutor(connection)._create_project_state(with_applied_migrations=True).apps  # type: ignore[attr-defined]


@pytest.fixture
def back_and_forth() -> Iterator[None]:
    try:
        yield
    finally:  # whatever happened, the next tests get the current schema
        migrate(MigrationExecutor(connection).loader.graph.leaf_nodes())


@pytest.mark.django_db(transaction=True)
def test_existing_revisions_take_their_templates_topic(back_and_forth: None) -> None:
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
