import os

from django.db import connection


def test_the_suite_runs_on_the_database_it_was_asked_for() -> None:
    # make test runs the suite twice; this proves the second run really is on PostgreSQL
    expected = {"sqlite": "sqlite", "postgres": "postgresql"}[os.environ.get("TEST_DATABASE", "sqlite")]
    assert connection.vendor == expected
