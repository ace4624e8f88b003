"""The import's merge (contacts/imports/staging.py) with other sessions writing contacts meanwhile."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from django.db import connection, connections, transaction

from contacts.imports.engine import ImportOptions, ImportResult, run_import
from contacts.models import Contact
from contacts.tests.csvfiles import write_csv


def _merge_waits_for_a_lock() -> bool:
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                       "AND query LIKE 'INSERT INTO contacts_contact%%'")
        return bool(cursor.fetchone()[0])


@pytest.mark.postgres_only
@pytest.mark.django_db(transaction=True)
def test_an_address_another_session_commits_during_the_merge_is_skipped_not_a_failed_import(tmp_path: Path) -> None:
    """The merge inserts new contacts without ON CONFLICT (issue 23: cheaper per row); an address
    another session adds meanwhile makes that a unique violation, and the import must still finish."""
    path = write_csv(tmp_path, "email,first name\nann@x.example,Ann\nbob@x.example,Bob\n")
    inserted, release = threading.Event(), threading.Event()

    def other_session() -> None:
        try:
            with transaction.atomic():
                Contact.objects.create(email="bob@x.example", first_name="Robert")
                inserted.set()
                release.wait(120)
        finally:
            connections.close_all()

    outcome: dict[str, ImportResult | BaseException] = {}

    def importer() -> None:
        try:
            outcome["result"] = run_import(path, ImportOptions(), report_path=tmp_path / "report.csv")
        except BaseException as exc:  # noqa: BLE001  reported by the assertion below
            outcome["result"] = exc
        finally:
            connections.close_all()

    # given another session that has inserted one of the file's addresses, not yet committed
    writer = threading.Thread(target=other_session)
    writer.start()
    assert inserted.wait(60)
    # when the import's merge reaches that address (it waits for the other session's row) and the
    # other session then commits
    merging = threading.Thread(target=importer)
    merging.start()
    deadline = time.monotonic() + 60
    while not _merge_waits_for_a_lock() and time.monotonic() < deadline and merging.is_alive():
        time.sleep(0.05)
    release.set()
    writer.join(60)
    merging.join(120)
    # then the import completes: the new address created, the other session's contact left as it is
    result = outcome["result"]
    assert isinstance(result, ImportResult), result
    assert (result.created, result.updated, result.skipped) == (1, 0, 1)
    assert dict(Contact.objects.values_list("email", "first_name")) == {"ann@x.example": "Ann",
                                                                        "bob@x.example": "Robert"}
