"""Fit rules: points while the contact matches, a reversing entry when it stops matching."""

from __future__ import annotations

import datetime as dt

import pytest

from contacts.models import Contact
from scoring.models import ScoreEntry
from scoring.services import score_fit
from scoring.tests.factories import NOW, contact, fit_rule

pytestmark = pytest.mark.django_db

CTO = {"field": "job_title", "op": "eq", "value": "CTO"}
IN_DE = {"field": "country", "op": "eq", "value": "DE"}


def ledger(who: Contact) -> list[tuple[str, int, str]]:
    return list(ScoreEntry.objects.filter(contact=who).order_by("id").values_list("rule_name", "points", "reason"))


def test_matching_contacts_get_fit_points_once() -> None:
    fit_rule("CTO", CTO, 25)
    fit_rule("Not Germany", {"not": IN_DE}, -5)
    ann, bob = contact(job_title="CTO", country="FR"), contact(job_title="Intern", country="DE")
    assert score_fit(contact_ids=[ann.pk, bob.pk], now=NOW) == {ann.pk}
    assert score_fit(contact_ids=[ann.pk, bob.pk], now=NOW) == set()  # still matching: nothing new
    ann.refresh_from_db()
    bob.refresh_from_db()
    assert (ann.score, bob.score) == (20, 0)
    assert ledger(ann) == [("CTO", 25, "matches the conditions"), ("Not Germany", -5, "matches the conditions")]
    assert ledger(bob) == []


def test_leaving_a_fit_rule_adds_a_reversing_entry_and_re_entering_scores_again() -> None:
    fit_rule("CTO", CTO, 25)
    ann = contact(job_title="CTO")
    score_fit(contact_ids=[ann.pk], now=NOW)
    Contact.objects.filter(pk=ann.pk).update(job_title="CEO")
    assert score_fit(contact_ids=[ann.pk], now=NOW + dt.timedelta(hours=1)) == {ann.pk}
    ann.refresh_from_db()
    assert ann.score == 0
    assert ledger(ann) == [("CTO", 25, "matches the conditions"), ("CTO", -25, "no longer matches: reversed")]
    Contact.objects.filter(pk=ann.pk).update(job_title="CTO")
    score_fit(contact_ids=[ann.pk], now=NOW + dt.timedelta(hours=2))
    ann.refresh_from_db()
    assert ann.score == 25
    assert sum(points for _, points, _ in ledger(ann)) == ann.score  # the ledger explains the score


def test_changed_rule_points_are_adjusted_and_inactive_rules_ignored() -> None:
    rule = fit_rule("CTO", CTO, 25)
    fit_rule("Germany", IN_DE, 10, is_active=False)
    ann = contact(job_title="CTO", country="DE")
    score_fit(contact_ids=[ann.pk], now=NOW)
    rule.points = 30
    rule.save()
    score_fit(contact_ids=[ann.pk], now=NOW)
    ann.refresh_from_db()
    assert ann.score == 30
    assert ledger(ann)[-1] == ("CTO", 5, "rule points changed from 25 to 30")


def test_fit_rules_only_look_at_the_given_contacts() -> None:
    fit_rule("CTO", CTO, 25)
    ann, bob = contact(job_title="CTO"), contact(job_title="CTO")
    score_fit(contact_ids=[ann.pk], now=NOW)
    bob.refresh_from_db()
    assert bob.score == 0
    assert not ScoreEntry.objects.filter(contact=bob).exists()
