"""The contact admin screens a marketer uses: the CSV import wizard and the import job page,
GDPR erasure and data export, and who may use which."""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client, override_settings
from rq import SimpleWorker

from contacts.models import Contact, ContactList, CustomField, ImportJob, Tag
from core.models import AuditEntry
from core.queues import get_connection, get_queue

pytestmark = pytest.mark.django_db

UPLOAD_URL = "/admin/contacts/importjob/add/"
# Semicolon-separated, Latin-1 (what Excel on a French or German Windows saves), one bad email.
LATIN1_CSV = "E-Mail;Vorname;Nachname;Plan\nrene@example.com;René;Dupont;gold\nnot-an-email;Bad;Row;silver\n"


@pytest.fixture(autouse=True)
def empty_queues() -> Iterator[None]:
    get_connection().flushdb()
    yield
    get_connection().flushdb()


def client_for(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def marketer(role_users: dict[str, User]) -> Client:
    return client_for(role_users["marketer"])


def upload(client: Client, data: bytes, *, name: str = "fair.csv", follow: bool = False, **options: str) -> Any:
    form = {"file": SimpleUploadedFile(name, data, content_type="text/csv"), "on_existing": "update",
            "create_fields": "on", "encoding": "", "delimiter": "", "tag": "", "add_to_list": "", **options}
    return client.post(UPLOAD_URL, form, follow=follow)


def mapping_url(job: ImportJob) -> str:
    return f"/admin/contacts/importjob/{job.pk}/mapping/"


def selected_targets(html: str) -> dict[str, str]:
    """{select name: selected option value} of the mapping form."""
    found = {}
    for name, options in re.findall(r'<select name="(col_\d+)"[^>]*>(.*?)</select>', html, re.S):
        chosen = re.search(r'<option value="([^"]*)"[^>]* selected>', options)
        found[name] = chosen.group(1) if chosen else ""
    return found


def preview_rows(html: str) -> list[tuple[int, str, str]]:
    """(line, outcome, reasons) of each row in the preview table."""
    rows = re.findall(r'data-line="(\d+)" data-outcome="(\w+)">.*?<td class="reasons">(.*?)</td>', html, re.S)
    return [(int(line), outcome, reasons) for line, outcome, reasons in rows]


def run_import_workers() -> None:
    queue = get_queue("imports")
    SimpleWorker([queue], connection=queue.connection).work(burst=True)


# --- The wizard, end to end --------------------------------------------------------------------------------


def test_marketer_uploads_maps_previews_and_runs_an_import(
    marketer: Client, role_users: dict[str, User], django_capture_on_commit_callbacks: Callable[..., Any],
) -> None:
    # given a list to add everyone to
    webinar = ContactList.objects.create(name="Webinar")
    # when the marketer uploads a semicolon-separated Latin-1 file
    response = upload(marketer, LATIN1_CSV.encode("latin-1"), tag="Fair 2025", add_to_list=str(webinar.pk))
    # then a pending import exists and the mapping step opens
    job = ImportJob.objects.get()
    assert response.status_code == 302
    assert response["Location"] == mapping_url(job)
    assert (job.status, job.original_name, job.created_by) == (ImportJob.Status.PENDING, "fair.csv",
                                                               role_users["marketer"])
    assert (job.tag.name if job.tag else None, job.add_to_list, job.create_fields) == ("Fair 2025", webinar, True)

    # when they open the mapping step
    html = marketer.get(mapping_url(job)).content.decode()
    # then each column has its suggested target, the file was decoded right, and the preview says what happens
    assert selected_targets(html) == {"col_0": "email", "col_1": "first_name", "col_2": "last_name",
                                      "col_3": "attributes.plan"}
    assert "René" in html
    assert "Windows-1252" in html
    assert "semicolons" in html
    assert preview_rows(html) == [(2, "create", ""), (3, "reject", "E-Mail: not a valid email address: "
                                                                "an email address must have an @-sign")]
    assert 'id="import-new-fields"' in html
    assert "<strong>plan</strong>" in html

    # when they start the import with that mapping
    mapping = {"col_0": "email", "col_1": "first_name", "col_2": "last_name", "col_3": "attributes.plan"}
    with django_capture_on_commit_callbacks(execute=True):
        response = marketer.post(mapping_url(job), {**mapping, "_start": "Start import"})
    # then the mapping is saved, the job is queued for the imports workers and its page opens
    job.refresh_from_db()
    assert response.status_code == 302
    assert response["Location"] == f"/admin/contacts/importjob/{job.pk}/change/"
    assert job.status == ImportJob.Status.QUEUED
    assert job.mapping == {"E-Mail": "email", "Vorname": "first_name", "Nachname": "last_name",
                           "Plan": "attributes.plan"}
    assert get_queue("imports").job_ids == [f"import-{job.pk}-0"]
    page = marketer.get(response["Location"]).content.decode()
    assert 'id="import-progress"' in page
    assert 'data-poll="true"' in page

    # when a worker runs the queue
    run_import_workers()
    # then the status feed reports the finished import with its counts
    status = marketer.get(f"/admin/contacts/importjob/{job.pk}/status/")
    assert status["Content-Type"] == "application/json"
    state = status.json()
    assert (state["status"], state["finished"], state["progress"]) == ("completed", True, 100)
    assert {k: state[k] for k in ("rows_read", "created", "updated", "skipped", "rejected", "duplicates")} == {
        "rows_read": 2, "created": 1, "updated": 0, "skipped": 0, "rejected": 1, "duplicates": 0,
    }
    assert state["error_report_url"] == f"/admin/contacts/importjob/{job.pk}/error-report/"
    assert any(entry["message"].startswith("completed:") for entry in state["log"])
    # and the contact is there, with its accent, custom field, tag and list
    rene = Contact.objects.get(email="rene@example.com")
    assert (rene.first_name, rene.last_name, rene.attributes) == ("René", "Dupont", {"plan": "gold"})
    assert [t.name for t in rene.tags.all()] == ["Fair 2025"]
    assert list(rene.lists.all()) == [webinar]
    assert CustomField.objects.filter(key="plan").exists()

    # when they download the error report
    report = marketer.get(state["error_report_url"])
    # then it is a CSV attachment naming the rejected line, column, value and reason
    assert report.status_code == 200
    assert report["Content-Type"].startswith("text/csv")
    assert report["Content-Disposition"] == 'attachment; filename="fair-errors.csv"'
    content = report.getvalue()  # a streaming response: read it once
    assert content.startswith(b"\xef\xbb\xbf"), "a BOM, so Excel reads the accents right"
    rows = list(csv.reader(io.StringIO(content.decode("utf-8-sig"))))
    assert rows == [["line", "column", "value", "reason"],
                    ["3", "E-Mail", "not-an-email", "not a valid email address: an email address must have an @-sign"]]


def test_changing_the_mapping_recomputes_the_preview_and_a_broken_one_is_explained(marketer: Client) -> None:
    # given an uploaded file waiting for its mapping
    upload(marketer, LATIN1_CSV.encode("latin-1"))
    job = ImportJob.objects.get()
    # when the marketer ignores the Plan column and updates the preview
    html = marketer.post(mapping_url(job), {"col_0": "email", "col_1": "first_name", "col_2": "last_name",
                                            "col_3": "", "_preview": "Update preview"}).content.decode()
    # then their choice is kept, no field will be created, and the outcomes are shown again
    assert selected_targets(html)["col_3"] == ""
    assert 'id="import-new-fields"' not in html
    assert [(line, outcome) for line, outcome, _ in preview_rows(html)] == [(2, "create"), (3, "reject")]
    # when they map no column to email and try to start
    html = marketer.post(mapping_url(job), {"col_0": "", "col_1": "first_name", "col_2": "last_name",
                                            "col_3": "", "_start": "Start import"}).content.decode()
    # then the problem is shown at the top, there is no preview, and nothing was started
    assert re.search(r'<p class="errornote" id="import-error">The column mapping has problems: no column is mapped '
                     r"to email", html)
    assert preview_rows(html) == []
    job.refresh_from_db()
    assert job.status == ImportJob.Status.PENDING
    assert get_queue("imports").count == 0


def test_a_file_that_is_not_a_csv_fails_with_its_reason(marketer: Client) -> None:
    # when the marketer uploads an Excel workbook by mistake
    response = upload(marketer, b"PK\x03\x04" + b"\x00" * 200, name="leads.xlsx", follow=True)
    # then the mapping step explains what is wrong, offers no import, and the job is marked failed
    html = response.content.decode()
    expected = "This is not a CSV file: it looks like an Excel workbook or zip archive: save it as CSV first."
    assert f'<p class="errornote" id="import-error">{expected}</p>' in html
    assert "Start import" not in html
    job = ImportJob.objects.get()
    assert (job.status, job.message) == (ImportJob.Status.FAILED, expected)
    # and coming back to the mapping step leads to the job page, which shows the reason
    again = marketer.get(mapping_url(job), follow=True)
    assert again.redirect_chain == [(f"/admin/contacts/importjob/{job.pk}/change/", 302)]
    assert expected in again.content.decode()


@override_settings(IMPORT_MAX_BYTES=1024)
def test_a_file_over_the_size_limit_is_refused_before_any_job_exists(marketer: Client) -> None:
    # when the marketer uploads a file one byte over the limit
    response = upload(marketer, b"email\n" + b"x" * 1019)
    # then the form says so, and no import was created
    assert response.status_code == 200
    errors = response.context["form"].errors["file"]
    assert errors == ["This file is 1.0\xa0KB; the largest file you can import is 1.0\xa0KB. Split it into smaller "
                      "files and import them one after the other."]
    assert "the largest file you can import is" in response.content.decode()
    assert not ImportJob.objects.exists()


# --- Who may do what ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("role", ["sales", "ops", "outsider"])
def test_only_marketers_may_upload_files(role_users: dict[str, User], role: str) -> None:
    client = client_for(role_users[role])
    assert client.get(UPLOAD_URL).status_code == 403
    assert upload(client, b"email\nann@example.com\n").status_code == 403
    assert not ImportJob.objects.exists()


def test_ops_follow_imports_but_cannot_start_or_change_them(role_users: dict[str, User]) -> None:
    # given a pending import and a finished one
    pending = ImportJob.objects.create(file="imports/a.csv", original_name="a.csv")
    done = ImportJob.objects.create(file="imports/b.csv", original_name="b.csv", status=ImportJob.Status.COMPLETED,
                                    progress=100, created=7, message="7 created")
    ops = client_for(role_users["ops"])
    # then ops see the list, the job page and its status feed
    listing = ops.get("/admin/contacts/importjob/")
    assert listing.status_code == 200
    assert "b.csv" in listing.content.decode()
    assert "Import a CSV file" not in listing.content.decode()
    assert ops.get(f"/admin/contacts/importjob/{done.pk}/change/").status_code == 200
    assert ops.get(f"/admin/contacts/importjob/{done.pk}/status/").json()["created"] == 7
    # but cannot map or start the pending one, nor change or delete either
    assert ops.get(mapping_url(pending)).status_code == 403
    assert ops.post(mapping_url(pending), {"col_0": "email", "_start": "1"}).status_code == 403
    assert ops.post(f"/admin/contacts/importjob/{done.pk}/delete/", {"post": "yes"}).status_code == 403
    assert ImportJob.objects.count() == 2
    # and sales, who have no access to imports, see nothing of them
    sales = client_for(role_users["sales"])
    assert sales.get("/admin/contacts/importjob/").status_code == 403
    assert sales.get(f"/admin/contacts/importjob/{done.pk}/status/").status_code == 403
    assert sales.get(f"/admin/contacts/importjob/{done.pk}/error-report/").status_code == 403


def test_import_history_is_read_only(marketer: Client, role_users: dict[str, User]) -> None:
    # given a finished import
    done = ImportJob.objects.create(file="imports/b.csv", original_name="b.csv", status=ImportJob.Status.COMPLETED,
                                    created=7)
    # then its page offers marketers no save or delete, and a forged delete is refused
    page = marketer.get(f"/admin/contacts/importjob/{done.pk}/change/").content.decode()
    assert 'name="_save"' not in page
    assert "deletelink" not in page
    assert marketer.post(f"/admin/contacts/importjob/{done.pk}/delete/", {"post": "yes"}).status_code == 403
    # and not even a superuser can save over its counts
    admin_client = client_for(role_users["admin"])
    assert admin_client.post(f"/admin/contacts/importjob/{done.pk}/change/", {"created": "0"}).status_code == 403
    done.refresh_from_db()
    assert done.created == 7


# --- GDPR: erase and export ---------------------------------------------------------------------------------


def test_erase_shows_what_goes_then_erases_and_leaves_an_audit_entry_without_personal_data(
    marketer: Client, role_users: dict[str, User],
) -> None:
    # given a tagged contact and a bystander
    ada = Contact.objects.create(email="ada@acme.example", first_name="Ada", last_name="Lovelace", company="Acme")
    ada.tags.add(Tag.objects.create(name="vip"))
    bob = Contact.objects.create(email="bob@acme.example")
    # when the marketer picks "Erase (GDPR)" for Ada
    confirm = marketer.post("/admin/contacts/contact/", {"action": "erase_contacts", "index": "0",
                                                         "_selected_action": [ada.pk]})
    # then a confirmation page lists her and what will be erased, and nothing is erased yet
    html = confirm.content.decode()
    assert confirm.status_code == 200
    assert "ada@acme.example" in html
    assert "Ada Lovelace" in html
    assert "bob@acme.example" not in html
    assert "tag and list memberships" in html
    assert "This cannot be undone." in html
    assert Contact.objects.filter(pk=ada.pk).exists()
    # when they confirm
    done = marketer.post("/admin/contacts/contact/", {"action": "erase_contacts", "post": "yes",
                                                      "_selected_action": [ada.pk]}, follow=True)
    # then she is gone, the bystander stays, and the audit says who erased what, without her data
    assert "Erased 1 contact" in done.content.decode()
    assert list(Contact.objects.all()) == [bob]
    entry = AuditEntry.objects.get()
    assert (entry.action, entry.actor, entry.target_type, entry.target_id) == (
        "contact.erased", role_users["marketer"], "contacts.contact", str(ada.pk))
    stored = repr([entry.actor_label, entry.action, entry.target_type, entry.target_id, entry.data]).lower()
    assert "ada" not in stored
    assert "lovelace" not in stored
    assert "acme" not in stored


def test_sales_are_not_offered_erase_and_cannot_post_it(role_users: dict[str, User]) -> None:
    ada = Contact.objects.create(email="ada@acme.example")
    sales = client_for(role_users["sales"])
    assert "erase_contacts" not in sales.get("/admin/contacts/contact/").content.decode()
    response = sales.post("/admin/contacts/contact/", {"action": "erase_contacts", "post": "yes", "index": "0",
                                                       "_selected_action": [ada.pk]})
    assert response.status_code in (200, 302, 403)
    assert Contact.objects.filter(pk=ada.pk).exists()
    assert not AuditEntry.objects.exists()


def test_export_data_downloads_the_contact_as_json(marketer: Client, role_users: dict[str, User]) -> None:
    # given a contact with tags
    ada = Contact.objects.create(email="ada@acme.example", first_name="Ada")
    ada.tags.add(Tag.objects.create(name="vip"), Tag.objects.create(name="beta"))
    url = f"/admin/contacts/contact/{ada.pk}/export-data/"
    # then her page links to the export
    assert f'href="{url}"' in marketer.get(f"/admin/contacts/contact/{ada.pk}/change/").content.decode()
    # when the marketer downloads it
    response = marketer.get(url)
    # then it is a JSON attachment with her email and tags
    assert response.status_code == 200
    assert response["Content-Disposition"] == f'attachment; filename="contact-{ada.pk}.json"'
    data = response.json()["contact"]
    assert (data["email"], data["first_name"], data["tags"]) == ("ada@acme.example", "Ada", ["beta", "vip"])
    # and a staff user without view permission on contacts gets nothing
    assert client_for(role_users["outsider"]).get(url).status_code == 403
