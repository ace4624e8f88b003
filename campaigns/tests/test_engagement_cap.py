"""Review finding 7: the engagement table is bounded per message. A bot replaying one email's
pixel or link at the pace the token's rate limit lets through (or faster when Redis is down: the
limiter fails open) stores at most ENGAGEMENT_CAP rows per message and kind; the first open and
click stay on the message and the report adds up to what is stored."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from campaigns import tracking, views
from campaigns.models import ENGAGEMENT_CAP, EngagementKind, Message, MessageEngagement
from campaigns.reports import report_for
from campaigns.services import engagement_record
from campaigns.tests.conftest import make_template
from campaigns.tests.test_reports import TWO_LINKS, path_of, send

pytestmark = pytest.mark.django_db

REPLAYS = 500


def test_a_replayed_pixel_and_link_store_at_most_the_cap(sender: Any, sink: Any) -> None:
    message, other = send(sender, make_template("news", html=TWO_LINKS), ["r@example.com", "s@example.com"])
    client = Client()
    pixel, link = path_of(tracking.open_url(message.pk)), path_of(tracking.click_url(message.pk, 1))
    # when a bot loads one email's pixel and follows one of its links 500 times each, every hit let
    # through by the token's limiter (its budget refilled before each, as a bot pacing itself gets)
    for _ in range(REPLAYS):
        views.token_throttle("open", message.pk).reset()
        views.token_throttle("click", message.pk).reset()
        assert client.get(pixel).status_code == 200
        assert client.get(link).status_code == 302
    # then the message has at most the cap of rows per kind
    rows = MessageEngagement.objects.filter(message=message)
    assert rows.filter(kind=EngagementKind.OPEN).count() == ENGAGEMENT_CAP < REPLAYS
    assert rows.filter(kind=EngagementKind.CLICK, link_index=1).count() == ENGAGEMENT_CAP
    slots = rows.filter(kind=EngagementKind.OPEN).order_by("slot").values_list("slot", flat=True)
    assert list(slots) == list(range(1, ENGAGEMENT_CAP + 1))
    # and the first open and click stay on the message; another message still records its own
    message.refresh_from_db()
    assert message.opened_at is not None
    assert message.clicked_at is not None
    assert client.get(path_of(tracking.open_url(other.pk))).status_code == 200
    assert MessageEngagement.objects.filter(message=other, kind=EngagementKind.OPEN).count() == 1
    # and the report adds up to what is stored: totals stop at the cap, uniques are messages
    report = report_for(Message.objects.filter(pk__in=[message.pk, other.pk]))
    assert (report.opened_total, report.opened_unique) == (ENGAGEMENT_CAP + 1, 2)
    assert (report.clicked_total, report.clicked_unique) == (ENGAGEMENT_CAP, 1)
    assert [(row.index, row.clicks, row.unique_clicks) for row in report.links] == [(1, ENGAGEMENT_CAP, 1)]


def test_two_hits_taking_the_same_slot_keep_one_row(sender: Any, sink: Any) -> None:
    """Concurrent hits both count the rows before inserting: the unique (message, kind, slot) keeps
    one (INSERT ... ON CONFLICT DO NOTHING), so the cap holds without a lock."""
    message = send(sender, make_template("news", html=TWO_LINKS), ["r@example.com"])[0]
    engagement_record(message_id=message.pk, kind=EngagementKind.OPEN)
    MessageEngagement.objects.bulk_create(
        [MessageEngagement(message=message, kind=EngagementKind.OPEN, slot=1, occurred_at=timezone.now())],
        ignore_conflicts=True)
    assert MessageEngagement.objects.filter(message=message).count() == 1


@pytest.mark.django_db(transaction=True)
def test_the_slot_migration_applies_and_reverses() -> None:
    """On PostgreSQL the unique index is built CONCURRENTLY by hand: same schema as Django's
    operation on SQLite, reversible on both."""
    from django.db import connection
    from django.db.migrations.executor import MigrationExecutor

    def slot_index() -> str | None:
        """The index's definition (Django's SQLite introspection cannot parse this table's CHECKs)."""
        query = ("SELECT indexdef FROM pg_indexes WHERE indexname = %s" if connection.vendor == "postgresql"
                 else "SELECT sql FROM sqlite_master WHERE type = 'index' AND name = %s")
        with connection.cursor() as cursor:
            cursor.execute(query, ["engagement_one_row_per_slot"])
            row = cursor.fetchone()
        return " ".join(row[0].replace('"', "").split()) if row else None

    def is_the_unique_slot_index(definition: str | None) -> bool:
        text = definition or ""
        return all(part in text for part in ("UNIQUE INDEX", "(message_id, kind, slot)", "slot IS NOT NULL"))

    def migrate(target: list[tuple[str, str]]) -> None:
        executor = MigrationExecutor(connection)
        executor.loader.build_graph()
        executor.migrate(target)

    assert is_the_unique_slot_index(slot_index()), slot_index()
    try:
        migrate([("campaigns", "0013_sns_notification_dedupe")])
        assert slot_index() is None
    finally:
        migrate(MigrationExecutor(connection).loader.graph.leaf_nodes())
    assert is_the_unique_slot_index(slot_index()), slot_index()
