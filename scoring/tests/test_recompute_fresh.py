"""Rules that hold no ledger entry (the first recompute, a new rule) are filled by a plain INSERT ...
SELECT instead of the diff against the ledger (issue 18, item 3: 40 s instead of <= 30 s for
4.47M entries), and the ledger is the same either way."""

from __future__ import annotations

from typing import Any

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext

from contacts.models import Event
from scoring import services
from scoring.models import ScoreEntry
from scoring.services import scores_recompute_all
from scoring.tests.factories import NOW
from scoring.tests.test_recompute_diff import some_rules_and_events

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.postgres_only]

CONTENT = ("contact_id", "rule_id", "rule_name", "event_id", "points", "half_life_days", "reason", "created_at")


def ledger() -> list[tuple[Any, ...]]:
    return sorted(ScoreEntry.objects.values_list(*CONTENT), key=str)


def test_the_first_recompute_inserts_without_the_diff_and_gives_the_ledger_the_diff_gives(settings: Any) -> None:
    settings.SCORING_RECOMPUTE_CONNECTIONS = 1  # every statement on this thread's connection, to be seen
    # Given rules and events, and an empty ledger
    rules = some_rules_and_events()
    # When everything is recomputed
    with CaptureQueriesContext(connection) as queries:
        scores_recompute_all(now=NOW)
    # Then no statement diffed against the ledger
    assert not [q["sql"] for q in queries.captured_queries if "FULL JOIN" in q["sql"]]
    fresh = ledger()
    assert len(fresh) > 30
    # And the diff, run on a ledger where each behaviour rule holds one stray entry, ends with
    # exactly the same entries
    ScoreEntry.objects.all().delete()
    stray = Event.objects.filter(event_type="email_open").first()
    assert stray is not None
    behaviour = [rule for name, rule in rules.items() if name != "leads"]
    ScoreEntry.objects.bulk_create([ScoreEntry(contact_id=stray.contact_id, rule=rule, rule_name="old", points=99,
                                               event=stray, created_at=NOW) for rule in behaviour])
    with CaptureQueriesContext(connection) as queries:
        scores_recompute_all(now=NOW)
    assert [q["sql"] for q in queries.captured_queries if "FULL JOIN" in q["sql"]]
    assert ledger() == fresh


def test_an_entry_live_scoring_inserted_meanwhile_sends_the_rules_to_the_diff() -> None:
    # Given rules whose wanted entries include one that live scoring stored after the check
    some_rules_and_events()
    scores_recompute_all(now=NOW)
    full = ledger()
    one = ScoreEntry.objects.filter(event__isnull=False).first()
    assert one is not None
    ScoreEntry.objects.exclude(pk=one.pk).delete()
    rule = one.rule
    assert rule is not None
    # When the plain insert runs for its rule
    with transaction.atomic(), connection.cursor() as cursor:
        added = services._behaviour_insert_fresh(cursor, *services._wanted_union_sql([rule]))
    # Then it gives way (nothing inserted), and the rebuild's diff completes the rule's entries
    assert added is None
    assert list(ScoreEntry.objects.values_list("pk", flat=True)) == [one.pk]
    scores_recompute_all(now=NOW)
    assert ledger() == full
