"""A full recompute writes only what differs (issue 18, item 3): with unchanged rules and events it
changes no ledger row and no cached score; an edited rule changes exactly its own entries."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from django.db import connection

from contacts.models import Contact, ContactScore, LifecycleStage
from scoring.models import ScoreEntry, ScoringRule
from scoring.services import scores_recompute_all
from scoring.tests.factories import NOW, bands, behaviour_rule, contact, event, fit_rule

pytestmark = pytest.mark.django_db(transaction=True)  # each recompute commits: PostgreSQL's xmin tells writes apart

COLUMNS = ("id", "contact_id", "rule_id", "rule_name", "event_id", "points", "half_life_days", "reason", "created_at")


def ledger_rows() -> dict[int, tuple[Any, ...]]:
    """Every ledger row by id, with its xmin on PostgreSQL (the transaction that last wrote it)."""
    columns = ", ".join(COLUMNS) + (", xmin::text" if connection.vendor == "postgresql" else "")
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {columns} FROM {ScoreEntry._meta.db_table}")  # noqa: S608
        return {row[0]: tuple(row) for row in cursor.fetchall()}


def scores() -> dict[int, tuple[Any, ...]]:
    return {row[0]: row for row in ContactScore.objects.values_list("contact_id", "score", "grade")}


def some_rules_and_events() -> dict[str, ScoringRule]:
    bands()
    rules = {
        "visits": behaviour_rule("Visits", points=5),
        "demo": behaviour_rule("Demo", "demo_request", points=40, repeatable=False),
        "capped": behaviour_rule("Opens", "email_open", points=3, cap_points=6, cap_window_days=7),
        "decaying": behaviour_rule("Webinar", "webinar_attended", points=20, half_life_days=30),
        "pricing": behaviour_rule("Pricing", property_filters={"path": "/pricing"}, points=10),
        # On job title: a stage condition would itself change when the first recompute makes MQLs.
        "leads": fit_rule("CTOs", {"field": "job_title", "op": "eq", "value": "CTO"}, points=15),
    }
    for i in range(12):
        who = contact(lifecycle_stage=LifecycleStage.LEAD, job_title="CTO" if i % 3 == 0 else "")
        for k in range(i % 4):
            event(who, at=NOW - dt.timedelta(hours=k), properties={"path": "/pricing" if k == 1 else "/"})
            event(who, "email_open", at=NOW - dt.timedelta(days=k))
        if i % 2:
            event(who, "demo_request", at=NOW - dt.timedelta(days=2))
            event(who, "demo_request", at=NOW - dt.timedelta(days=1))
            event(who, "webinar_attended", at=NOW - dt.timedelta(days=40))
    return rules


def test_a_second_recompute_with_unchanged_rules_writes_no_ledger_row_and_no_score() -> None:
    # Given a ledger and scores from a first full recompute
    some_rules_and_events()
    first: dict[str, int] = {}
    scores_recompute_all(now=NOW, ledger=first)
    before, scores_before = ledger_rows(), scores()
    assert first["added"] == len(before) > 30
    assert first["changed"] == first["removed"] == 0
    # When everything is recomputed again, nothing having changed
    second: dict[str, int] = {}
    changed = scores_recompute_all(now=NOW, ledger=second)
    # Then no entry was added, changed or removed: the same rows, with the same ids (and, on
    # PostgreSQL, the same xmin: not even rewritten with equal values), and no score changed
    assert second == {"added": 0, "changed": 0, "removed": 0}
    assert ledger_rows() == before
    assert (changed, scores()) == (0, scores_before)


def test_an_edited_rule_changes_exactly_its_own_entries() -> None:
    # Given a full ledger
    rules = some_rules_and_events()
    scores_recompute_all(now=NOW)
    before = ledger_rows()
    visits = {i for i, row in before.items() if row[2] == rules["visits"].pk}
    demo = {i for i, row in before.items() if row[2] == rules["demo"].pk}
    # When one rule's points change and another becomes repeatable
    ScoringRule.objects.filter(pk=rules["visits"].pk).update(points=7)
    ScoringRule.objects.filter(pk=rules["demo"].pk).update(repeatable=True)
    ledger: dict[str, int] = {}
    scores_recompute_all(now=NOW, ledger=ledger)
    after = ledger_rows()
    # Then the first rule's entries are updated in place (same ids, new points), the second gains
    # one entry per contact's second demo request, and no other row is touched
    assert ledger == {"added": len(demo), "changed": len(visits), "removed": 0}
    assert {i for i in after if after[i][2] == rules["visits"].pk} == visits
    assert {after[i][5] for i in visits} == {7}
    assert len([i for i in after if after[i][2] == rules["demo"].pk]) == 2 * len(demo)
    untouched = set(before) - visits
    assert {i: after[i] for i in untouched} == {i: before[i] for i in untouched}
    # And each entry still explains itself by its event
    for entry in ScoreEntry.objects.filter(rule_id=rules["visits"].pk):
        assert entry.explanation == f"event #{entry.event_id}"


def test_a_contact_that_stops_matching_a_fit_rule_loses_only_its_entry() -> None:
    # Given a full ledger in which the fit rule holds one entry per CTO
    rules = some_rules_and_events()
    scores_recompute_all(now=NOW)
    before = ledger_rows()
    fit = {row[1]: i for i, row in before.items() if row[2] == rules["leads"].pk}
    ctos = set(Contact.objects.filter(job_title="CTO").values_list("id", flat=True))
    assert set(fit) == ctos
    assert len(ctos) == 4
    # When one CTO changes job and another contact becomes one (edited without live scoring)
    gone = min(ctos)
    new = Contact.objects.exclude(job_title="CTO").values_list("id", flat=True)[0]
    Contact.objects.filter(pk=gone).update(job_title="CFO")
    Contact.objects.filter(pk=new).update(job_title="CTO")
    ledger: dict[str, int] = {}
    scores_recompute_all(now=NOW, ledger=ledger)
    after = ledger_rows()
    # Then one entry goes, one comes, and every other row (the other CTOs' included) is untouched
    assert ledger == {"added": 1, "changed": 0, "removed": 1}
    assert {row[1] for row in after.values() if row[2] == rules["leads"].pk} == ctos - {gone} | {new}
    kept = set(before) - {fit[gone]}
    assert {i: after[i] for i in kept} == {i: before[i] for i in kept}
