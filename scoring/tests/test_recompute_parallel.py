"""A full recompute outside a transaction: on PostgreSQL it spreads rules and contact id ranges over
SCORING_RECOMPUTE_CONNECTIONS connections. Whatever the split, the result must equal the ledger."""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections import defaultdict

import pytest
from django.db import OperationalError, connection, transaction
from django.test import override_settings

from contacts.models import Contact, ContactScore, LifecycleStage
from core.logs import correlation_scope, current_correlation_id
from core.testing.scores import score_set
from scoring import services
from scoring.models import ScoreEntry, ScoringRule
from scoring.tests.factories import NOW, bands, behaviour_rule, contact, event, fit_rule


def expected_scores() -> dict[int, int]:
    """Each contact's score from its ledger entries, in Python (no decaying rules here)."""
    totals: dict[int, int] = defaultdict(int)
    for contact_id, points in ScoreEntry.objects.values_list("contact_id", "points"):
        totals[contact_id] += points
    return {cid: totals.get(cid, 0) for cid in Contact.objects.values_list("id", flat=True)}


def grade_for(score: int) -> str:
    return "A" if score >= 60 else "B" if score >= 30 else "C" if score >= 10 else ""


@pytest.mark.django_db(transaction=True)
def test_a_full_recompute_outside_a_transaction_matches_the_ledger_for_every_contact(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    bands()
    behaviour_rule("Visits", points=5)
    behaviour_rule("Demo", "demo_request", points=40, repeatable=False)
    behaviour_rule("Unsubscribed", "unsubscribe", points=-20)
    fit_rule("Leads", {"field": "lifecycle_stage", "op": "eq", "value": "lead"}, points=15)
    people = [contact(lifecycle_stage=LifecycleStage.LEAD if i % 3 == 0 else LifecycleStage.SUBSCRIBER)
              for i in range(40)]
    for i, who in enumerate(people):
        for k in range(i % 4):
            event(who, at=NOW - dt.timedelta(hours=k))
        if i % 5 == 0:
            event(who, "demo_request", at=NOW)
            event(who, "demo_request", at=NOW + dt.timedelta(minutes=1))  # not repeatable: scores once
        if i % 7 == 0:
            event(who, "unsubscribe", at=NOW)
    score_set(people[1], 999, "A")  # stale cache, no entries
    threads: set[str] = set()
    correlation_ids: set[str] = set()
    rebuild = services.scoring_rules_rebuild
    # PostgreSQL: two groups of rules on two threads. Each waits for the other, or a fast first
    # group could let its thread take the second group too before the second thread starts.
    both = threading.Barrier(2 if connection.vendor == "postgresql" else 1)

    def spy(**kwargs: object) -> services.LedgerDiff:
        threads.add(threading.current_thread().name)
        correlation_ids.add(current_correlation_id())
        both.wait(timeout=30)
        return rebuild(**kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(services, "scoring_rules_rebuild", spy)
    with override_settings(SCORING_RECOMPUTE_CONNECTIONS=2), correlation_scope("recompute-job-7"):
        changed = services.scores_recompute_all(now=NOW)
    assert correlation_ids == {"recompute-job-7"}  # the threads log under the job's id

    wanted = expected_scores()
    rows = ContactScore.objects.values_list("contact_id", "score", "grade")
    held = {cid: (score, grade) for cid, score, grade in rows}
    got = {cid: held.get(cid, (0, ""))[0] for cid in wanted}  # no row: 0 and no grade
    assert got == wanted
    assert {cid: held.get(cid, (0, ""))[1] for cid in wanted} == {cid: grade_for(s) for cid, s in wanted.items()}
    # Contacts that never scored get no ContactScore row (no row reads as 0 and no grade).
    assert set(ContactScore.objects.values_list("contact_id", flat=True)) == {
        cid for cid, s in wanted.items() if s != 0}
    assert wanted[people[0].pk] == 15 + 40 - 20  # lead, demo once, unsubscribed; no visits (i % 4 == 0)
    assert wanted[people[1].pk] == 5
    assert got[people[1].pk] == 5
    assert changed == sum(1 for s in wanted.values() if s != 0)
    assert ScoreEntry.objects.filter(rule__name="Demo").count() == len(range(0, 40, 5))
    # PostgreSQL rebuilt the rules on two threads of their own; SQLite stays on the caller's connection.
    if connection.vendor == "postgresql":
        assert len(threads) == 2
        assert all(name.startswith("recompute") for name in threads)
    else:
        assert threads == {threading.current_thread().name}


@pytest.mark.django_db(transaction=True)
def test_inside_a_transaction_the_recompute_stays_on_one_connection() -> None:
    with override_settings(SCORING_RECOMPUTE_CONNECTIONS=4):
        assert services._connections() == (4 if connection.vendor == "postgresql" else 1)
        with transaction.atomic():
            assert services._connections() == 1  # other connections could not see uncommitted rows


@pytest.mark.django_db
@pytest.mark.parametrize("parts", [1, 2, 3, 7])
def test_id_ranges_cover_every_contact_once(parts: int) -> None:
    ids = [contact().pk for _ in range(10)]
    ranges = services._id_ranges(parts)
    assert ranges[0][0] == min(ids)
    assert ranges[-1][1] == max(ids)
    assert all(low <= high for low, high in ranges)
    assert all(ranges[i][1] + 1 == ranges[i + 1][0] for i in range(len(ranges) - 1))  # no gap, no overlap
    assert len(ranges) <= parts


@pytest.mark.postgres_only  # needs concurrent writers (SQLite has one; its INSERT has ON CONFLICT DO NOTHING)
@pytest.mark.django_db(transaction=True)
def test_an_entry_scored_live_while_the_recompute_inserts_does_not_undo_the_rebuild() -> None:
    rule = behaviour_rule("Visits", points=5)
    who = contact()
    scored_live = event(who, at=NOW)
    for _ in range(3):
        event(contact(), at=NOW)
    inserted, release = threading.Event(), threading.Event()
    outcome: dict[str, object] = {}

    def live_scoring() -> None:  # `score_events` inserts the entry (ignore_conflicts) and commits a bit later
        try:
            with transaction.atomic():
                ScoreEntry.objects.bulk_create([ScoreEntry(
                    contact=who, rule=rule, rule_name=rule.name, event=scored_live, points=5, reason="",
                    created_at=scored_live.occurred_at)], ignore_conflicts=True)
                inserted.set()
                release.wait(timeout=30)
        finally:
            connection.close()

    def recompute() -> None:
        try:
            outcome["diff"] = services.scoring_rules_rebuild(rules=[rule], now=NOW)
        except Exception as exc:  # noqa: BLE001  reported by the assertion below
            outcome["error"] = exc
        finally:
            connection.close()

    live = threading.Thread(target=live_scoring)
    live.start()
    assert inserted.wait(timeout=30)
    rebuild = threading.Thread(target=recompute)
    rebuild.start()
    # the recompute does not see the uncommitted entry, wants it too, and waits on it in the
    # ledger's unique index; then the live transaction commits
    for _ in range(300):
        with connection.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                           " AND wait_event_type = 'Lock'")
            if cursor.fetchone()[0]:
                break
        time.sleep(0.1)
    release.set()
    live.join(timeout=30)
    rebuild.join(timeout=60)
    assert "error" not in outcome, outcome.get("error")
    assert outcome["diff"] == services.LedgerDiff(added=3)  # the live entry stays as it is
    assert ScoreEntry.objects.filter(rule=rule).count() == 4


@pytest.mark.sqlite_only  # PostgreSQL groups rules per connection
@pytest.mark.django_db
def test_on_sqlite_each_rule_is_rebuilt_in_its_own_transaction(monkeypatch: pytest.MonkeyPatch) -> None:
    # given two rules, the second one's rebuild failing (SQLite's write lock timing out, say)
    first = behaviour_rule("Visits", points=5)
    second = behaviour_rule("Demo", "demo_request", points=40)
    who = contact()
    event(who, at=NOW)
    event(who, "demo_request", at=NOW)
    real = services._behaviour_diff_sqlite

    def rebuild(rule: ScoringRule) -> services.LedgerDiff:
        if rule.pk == second.pk:
            raise OperationalError("database is locked")
        return real(rule)

    monkeypatch.setattr(services, "_behaviour_diff_sqlite", rebuild)
    # when a full recompute runs, then it fails, but the first rule's rebuild was committed on its
    # own (one transaction per rule: SQLite's only write lock is held for one rule at a time)
    with pytest.raises(OperationalError):
        services.scores_recompute_all(now=NOW)
    assert list(ScoreEntry.objects.filter(rule=first).values_list("contact_id", "points")) == [(who.pk, 5)]
