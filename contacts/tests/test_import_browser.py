"""In a real browser: a marketer imports a CSV file through the admin wizard and watches it finish."""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect
from rq import SimpleWorker

from conftest import admin_login, make_user
from contacts.models import Contact, CustomField, ImportJob
from core import roles
from core.queues import get_connection, get_queue
from core.testing.artifacts import screenshot_path

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

LEADS_CSV = (
    b"Email,First name,Last name,Organisation,Comment\n"
    b"ann@acme.example,Ann,Archer,Acme,met at the booth\n"
    b"bob@globex.example,Bob,Baker,Globex,\n"
    b"no-at-sign,Cy,Cole,Initech,typo in the email\n"
    b"dee@umbrella.example,Dee,Dunn,Umbrella,wants a demo\n"
)


@pytest.fixture(autouse=True)
def empty_queues() -> Iterator[None]:
    get_connection().flushdb()
    yield
    get_connection().flushdb()


def test_marketer_maps_columns_starts_the_import_and_watches_it_finish(page: Any) -> None:
    # given a marketer on the imports page
    make_user("marketer", roles.MARKETER)
    admin_login(page, "marketer", "pw-marketer")
    page.goto("/admin/contacts/importjob/")

    # when they upload a file
    page.click("text=Import a CSV file")
    page.set_input_files("#id_file", files=[{"name": "leads.csv", "mimeType": "text/csv", "buffer": LEADS_CSV}])
    page.fill("#id_tag", "webinar")
    page.click("input[name=_upload]")
    page.wait_for_url(re.compile(r"/admin/contacts/importjob/\d+/mapping/$"))

    # then each column has a suggested target, and the unknown "Comment" column would become a new field
    for column, target in enumerate(["email", "first_name", "last_name", "company", "attributes.comment"]):
        expect(page.locator(f"select[name=col_{column}]")).to_have_value(target)
    expect(page.locator("#import-new-fields")).to_contain_text("comment")

    # when they choose to ignore the Comment column and update the preview
    page.select_option("select[name=col_4]", "")
    page.click("#import-update-preview")
    # then the page comes back with their choice, no new field, and each row's outcome
    expect(page.locator("#import-new-fields")).to_have_count(0)
    expect(page.locator("select[name=col_4]")).to_have_value("")
    expect(page.locator("#import-preview-table thead")).to_contain_text("→ ignored")
    rows = page.locator("#import-preview-table tbody tr")
    expect(rows).to_have_count(4)
    assert [rows.nth(i).get_attribute("data-outcome") for i in range(4)] == ["create", "create", "reject", "create"]
    expect(page.locator("tr[data-line='4'] td.reasons")).to_have_text(
        "Email: not a valid email address: an email address must have an @-sign")
    page.screenshot(path=screenshot_path("import-mapping"), full_page=True)

    # when they start the import
    page.click("#import-start")
    page.wait_for_url(re.compile(r"/admin/contacts/importjob/\d+/change/$"))
    # then the job page shows it queued, polling for news
    expect(page.locator("#import-status-label")).to_have_text("Queued")
    expect(page.locator("#import-progress-text")).to_have_text("0 %")
    expect(page.locator("#import-report")).to_be_hidden()

    # when a worker runs the queued import while the page polls
    queue = get_queue("imports")
    assert queue.count == 1
    SimpleWorker([queue], connection=queue.connection).work(burst=True)

    # then, without a reload, the page shows it completed with a full progress bar and its counts
    expect(page.locator("#import-status-label")).to_have_text("Completed")
    expect(page.locator("#import-progress-text")).to_have_text("100 %")
    assert page.locator("#import-progress").evaluate("bar => bar.value") == 100
    expect(page.locator("[data-count=created]")).to_have_text("3")
    expect(page.locator("[data-count=rejected]")).to_have_text("1")
    expect(page.locator("#import-message")).to_have_text(
        "3 created, 0 updated, 0 skipped, 1 rejected, 0 duplicates")
    expect(page.locator("#import-log-body")).to_contain_text("completed: 3 created")
    page.screenshot(path=screenshot_path("import-finished"), full_page=True)

    # when they download the error report
    with page.expect_download() as download_info:
        page.click("#error-report-link")
    download = download_info.value
    # then it names the rejected line, column, value and reason
    assert download.suggested_filename == "leads-errors.csv"
    rows_in_report = list(csv.reader(io.StringIO(Path(download.path()).read_text(encoding="utf-8-sig"))))
    assert rows_in_report == [["line", "column", "value", "reason"],
                              ["4", "Email", "no-at-sign",
                               "not a valid email address: an email address must have an @-sign"]]

    # and the import did what the preview said, with the Comment column ignored
    job = ImportJob.objects.get()
    assert (job.status, job.created, job.rejected) == (ImportJob.Status.COMPLETED, 3, 1)
    assert job.mapping["Comment"] == ""
    assert sorted(Contact.objects.values_list("email", flat=True)) == [
        "ann@acme.example", "bob@globex.example", "dee@umbrella.example"]
    assert Contact.objects.get(email="ann@acme.example").attributes == {}
    assert not CustomField.objects.filter(key="comment").exists()
