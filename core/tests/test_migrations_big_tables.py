"""The index migrations of the big tables (contacts, events, memberships, the score ledger) run on
PostgreSQL as hand-written CONCURRENTLY statements: they must leave the schema Django's own
operations would, and reverse cleanly, on both databases."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

BEFORE = [("contacts", "0005_event_correlation_segment_refresh_error"),
          ("scoring", "0003_ledger_lean_indexes_no_db_fks"), ("automation", "0003_correlation_id")]
AFTER = [("contacts", "0007_contact_score_table"), ("scoring", "0005_gradeband_min_score_above_zero"),
         ("automation", "0004_steprun_time_indexes")]


def migrate(targets: list[tuple[str, str]]) -> None:
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(targets)


def indexes(table: str) -> dict[str, tuple[tuple[str, ...], bool]]:
    """index or constraint name -> (columns, unique), for indexes only (not foreign keys or checks)."""
    with connection.cursor() as cursor:
        found = connection.introspection.get_constraints(cursor, table)
    return {name: (tuple(c["columns"]), bool(c["unique"])) for name, c in found.items()
            if c["index"] or (c["unique"] and not c["primary_key"])}


def has_columns(table: str, columns: tuple[str, ...], *, unique: bool | None = None) -> bool:
    return any(cols == columns and (unique is None or uniq == unique) for cols, uniq in indexes(table).values())


@pytest.fixture
def back_and_forth() -> Iterator[None]:
    try:
        yield
    finally:
        # whatever happened, the next tests get the current schema (later migrations included)
        migrate(MigrationExecutor(connection).loader.graph.leaf_nodes())
        executor = MigrationExecutor(connection)
        assert not executor.migration_plan(executor.loader.graph.leaf_nodes())


@pytest.mark.django_db(transaction=True)
def test_the_big_table_index_migrations_apply_and_reverse(back_and_forth: None) -> None:
    # current schema: one ledger index (contact, rule, event), unique; no redundant FK indexes
    assert has_columns("scoring_scoreentry", ("contact_id", "rule_id", "event_id"), unique=True)
    assert not has_columns("scoring_scoreentry", ("rule_id", "event_id"))
    assert not has_columns("scoring_scoreentry", ("event_id",))
    assert not has_columns("contacts_event", ("contact_id",))
    assert not has_columns("contacts_segmentmembership", ("segment_id",))
    assert has_columns("contacts_segmentmembership", ("contact_id",))  # segment_member_contact_idx, once
    assert sum(cols == ("contact_id",) for cols, _ in indexes("contacts_segmentmembership").values()) == 1
    assert "contact_owner_idx" in indexes("contacts_contact")
    assert {"steprun_finished_idx", "steprun_retrying_idx"} <= set(indexes("automation_steprun"))

    migrate(BEFORE)
    assert has_columns("scoring_scoreentry", ("rule_id", "event_id"), unique=True)
    assert has_columns("scoring_scoreentry", ("event_id",))
    assert not has_columns("scoring_scoreentry", ("contact_id", "rule_id", "event_id"))
    assert has_columns("contacts_event", ("contact_id",))
    assert has_columns("contacts_segmentmembership", ("segment_id",))
    assert "contact_owner_idx" not in indexes("contacts_contact")
    assert has_columns("contacts_contact", ("owner_id",))
    assert not {"steprun_finished_idx", "steprun_retrying_idx"} & set(indexes("automation_steprun"))

    migrate(AFTER)
    assert has_columns("scoring_scoreentry", ("contact_id", "rule_id", "event_id"), unique=True)
    assert not has_columns("contacts_event", ("contact_id",))
    assert "contact_owner_idx" in indexes("contacts_contact")
    assert {"steprun_finished_idx", "steprun_retrying_idx"} <= set(indexes("automation_steprun"))


@pytest.mark.django_db(transaction=True)
def test_scores_move_to_their_own_table_and_back(back_and_forth: None) -> None:
    """contacts 0007: score and grade leave the contacts table for ContactScore, and come back on
    the way down; contacts at 0 without a grade need no row."""
    migrate([("contacts", "0006_lean_contact_event_membership_indexes")])
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO contacts_contact (email, first_name, last_name, company, job_title, phone, country,"
            " lifecycle_stage, attributes, consent_status, consent_source, is_test, score, grade, created_at,"
            " updated_at) VALUES"
            " ('a@x.example', '', '', '', '', '', '', 'lead', '{}', 'unknown', '', false, 42, 'B', %s, %s),"
            " ('b@x.example', '', '', '', '', '', '', 'lead', '{}', 'unknown', '', false, 0, '', %s, %s),"
            " ('c@x.example', '', '', '', '', '', '', 'lead', '{}', 'unknown', '', false, -5, '', %s, %s)",
            ["2026-01-01T00:00:00+00:00"] * 6,
        )
    # forward to today's leaves, not AFTER: later migrations of other apps (automation 0005) stay
    # applied while contacts goes back, and pulling them back to AFTER would mix directions
    migrate(MigrationExecutor(connection).loader.graph.leaf_nodes())
    assert "score" not in {c.name for c in connection.introspection.get_table_description(
        connection.cursor(), "contacts_contact")}
    with connection.cursor() as cursor:
        cursor.execute("SELECT c.email, s.score, s.grade FROM contacts_contactscore s"
                       " JOIN contacts_contact c ON c.id = s.contact_id ORDER BY c.email")
        assert cursor.fetchall() == [("a@x.example", 42, "B"), ("c@x.example", -5, "")]
    migrate([("contacts", "0006_lean_contact_event_membership_indexes")])
    with connection.cursor() as cursor:
        cursor.execute("SELECT email, score, grade FROM contacts_contact ORDER BY email")
        assert cursor.fetchall() == [("a@x.example", 42, "B"), ("b@x.example", 0, ""), ("c@x.example", -5, "")]
        cursor.execute("DELETE FROM contacts_contact")
