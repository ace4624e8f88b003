"""Consent at import (issue 20): a consent column is recorded in the consent history (source
"import", the file as proof), and marketing email then goes only to those who consented."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.core.management import call_command

from campaigns.delivery import delivery_run_batch
from campaigns.models import Message, MessageStatus
from campaigns.services import QueueItem, messages_queue
from campaigns.tests.conftest import make_template
from consent.models import ConsentRecord, ConsentSource
from contacts.models import Contact

pytestmark = pytest.mark.django_db


def test_an_import_with_a_consent_column_sends_only_to_those_who_consented(tmp_path: Path, sender, sink,  # noqa: ANN001
                                                                          capsys: pytest.CaptureFixture[str]):
    path = tmp_path / "leads.csv"
    path.write_text("email,consent\nyes@example.com,granted\nno@example.com,withdrawn\nmaybe@example.com,\n")
    call_command("import_contacts", str(path), "--json")
    capsys.readouterr()

    history = {r.contact.email if r.contact else "": r for r in ConsentRecord.objects.select_related("contact")}
    assert set(history) == {"yes@example.com", "no@example.com"}  # "unknown" is no consent change
    granted = history["yes@example.com"]
    assert (granted.status, granted.source, granted.proof["file"]) == ("granted", ConsentSource.IMPORT, "leads.csv")

    template = make_template()
    messages_queue(template=template, items=[QueueItem(c.pk, f"news:{c.pk}") for c in Contact.objects.all()])
    delivery_run_batch(sender=sender)
    outcome = {m.contact.email: (m.status, m.reason) for m in Message.objects.select_related("contact")}
    assert outcome == {"yes@example.com": (MessageStatus.SENT, ""),
                       "no@example.com": (MessageStatus.SUPPRESSED, "unsubscribed"),
                       "maybe@example.com": (MessageStatus.SUPPRESSED, "no_consent")}
    assert [r.rcpt_tos for r in sink.received] == [["yes@example.com"]]

    # Importing the same file again changes nothing, so it records nothing.
    call_command("import_contacts", str(path), "--json", "--on-existing", "update")
    assert ConsentRecord.objects.count() == 2


def test_the_wizard_preview_says_how_many_will_be_able_to_receive_marketing_email(role_users):  # noqa: ANN001
    from django.core.files.uploadedfile import SimpleUploadedFile
    from django.test import Client

    from contacts.models import ImportJob

    Contact.objects.create(email="known@example.com", consent_status="granted")
    client = Client()
    client.force_login(role_users["marketer"])
    data = b"email,consent\nyes@example.com,granted\nno@example.com,\nknown@example.com,\n"
    client.post("/admin/contacts/importjob/add/", {
        "file": SimpleUploadedFile("leads.csv", data, content_type="text/csv"), "on_existing": "update",
        "create_fields": "on", "encoding": "", "delimiter": "", "tag": "", "add_to_list": ""})
    job = ImportJob.objects.get()
    html = client.get(f"/admin/contacts/importjob/{job.pk}/mapping/").content.decode()
    marketing = html.split('id="import-marketing"', 1)[1].split("</p>", 1)[0]
    # yes@ from the file, known@ from what the contact already has; no@ has none
    assert "Marketing email: 2 of the file's 3 contacts" in " ".join(marketing.split())
    assert "no_consent" in marketing


def test_the_preview_marketing_count_is_the_whole_files_not_the_previewed_rows(role_users):  # noqa: ANN001
    """The preview table shows the first 20 rows; the marketing figure counts every contact the file
    writes: the winning row of each address, the consent it will have after the merge, minus the
    suppression list, rows the import rejects left out."""
    from django.core.files.uploadedfile import SimpleUploadedFile
    from django.test import Client

    from campaigns.models import SuppressionReason
    from campaigns.services import suppression_add
    from contacts.models import ImportJob

    Contact.objects.create(email="known@example.com", consent_status="granted")
    Contact.objects.create(email="gone@example.com", consent_status="granted")
    suppression_add(email="bounced@example.com", reason=SuppressionReason.HARD_BOUNCE)
    lines = ["email,consent,country"]
    lines += [f"first{i}@example.com,,DE" for i in range(20)]  # the previewed rows: no consent
    lines += [f"later{i}@example.com,granted,DE" for i in range(30)]  # 30 beyond the preview
    lines += ["known@example.com,,DE",  # keeps the consent it has: +1
              "gone@example.com,withdrawn,DE",  # the file withdraws it: 0
              "bounced@example.com,granted,DE",  # suppressed: 0
              "bad@example.com,granted,Germany",  # rejected (country): not written
              "later0@example.com,withdrawn,DE"]  # a duplicate whose last row wins: -1
    client = Client()
    client.force_login(role_users["marketer"])
    client.post("/admin/contacts/importjob/add/", {
        "file": SimpleUploadedFile("big.csv", "\n".join(lines).encode(), content_type="text/csv"),
        "on_existing": "update", "create_fields": "on", "encoding": "", "delimiter": "", "tag": "",
        "add_to_list": ""})
    job = ImportJob.objects.get()
    html = client.get(f"/admin/contacts/importjob/{job.pk}/mapping/").content.decode()
    marketing = " ".join(html.split('id="import-marketing"', 1)[1].split("</p>", 1)[0].split())
    assert "Marketing email: 30 of the file's 53 contacts" in marketing


def test_a_file_level_basis_grants_with_its_proof_or_sends_confirmations(tmp_path: Path, sender, sink,  # noqa: ANN001
                                                                        capsys: pytest.CaptureFixture[str]):
    from django.core.management.base import CommandError

    from consent.models import OptInRequest

    path = tmp_path / "fair.csv"
    path.write_text("email,consent\na@example.com,\nb@example.com,withdrawn\n")
    with pytest.raises(CommandError, match="needs --consent-source"):
        call_command("import_contacts", str(path), "--consent-basis", "granted")
    assert not Contact.objects.exists()

    call_command("import_contacts", str(path), "--json", "--consent-basis", "granted", "--consent-source",
                 "trade fair 2026 badge scan", "--consent-date", "2026-11-20")
    a, b = Contact.objects.get(email="a@example.com"), Contact.objects.get(email="b@example.com")
    assert a.consent_at is not None
    assert (a.consent_status, a.consent_source, a.consent_at.date().isoformat()) == \
        ("granted", "trade fair 2026 badge scan", "2026-11-20")
    assert b.consent_status == "withdrawn"  # the file's own column wins
    record = ConsentRecord.objects.get(contact=a)
    assert (record.source, record.proof["basis"]) == (ConsentSource.IMPORT, "granted")

    other = tmp_path / "webinar.csv"
    other.write_text("email\nc@example.com\n")
    call_command("import_contacts", str(other), "--json", "--consent-basis", "confirm")
    capsys.readouterr()
    c = Contact.objects.get(email="c@example.com")
    assert c.consent_status == "unknown"  # only the confirmation link grants it
    assert OptInRequest.objects.get(contact=c).source == ConsentSource.IMPORT
    delivery_run_batch(sender=sender)
    assert [r.rcpt_tos for r in sink.received] == [["c@example.com"]]


def test_the_wizard_asks_for_the_files_consent_basis_and_the_import_applies_it(role_users):  # noqa: ANN001
    from django.core.files.uploadedfile import SimpleUploadedFile
    from django.test import Client

    from contacts.imports.jobs import import_job_run, import_job_start
    from contacts.models import ImportJob

    client = Client()
    client.force_login(role_users["marketer"])

    def upload(**consent: str):  # noqa: ANN202
        return client.post("/admin/contacts/importjob/add/", {
            "file": SimpleUploadedFile("fair.csv", b"email\na@example.com\n", content_type="text/csv"),
            "on_existing": "update", "encoding": "", "delimiter": "", "tag": "", "add_to_list": "", **consent})

    refused = upload(consent_basis="granted")
    assert refused.status_code == 200
    assert "Everyone consented needs" in refused.content.decode()
    assert not ImportJob.objects.exists()

    assert upload(consent_basis="granted", consent_source="fair badge scan", consent_date="2026-11-20").status_code \
        == 302
    job = ImportJob.objects.get()
    assert job.consent_basis == {"basis": "granted", "source": "fair badge scan", "at": "2026-11-20"}
    import_job_start(job=job)
    import_job_run(job_id=job.pk)
    contact = Contact.objects.get()
    assert (contact.consent_status, contact.consent_source) == ("granted", "fair badge scan")
    assert ConsentRecord.objects.get(contact=contact).proof["basis"] == "granted"


def test_confirm_basis_queues_the_confirmations_set_based_whatever_the_number_of_contacts(sender, sink):  # noqa: ANN001
    """--consent-basis confirm: one request, one pending history row and one email per contact
    without consent, made with about as many queries for 40 contacts as for 3 (it was a
    handful per contact inside the import's transaction); each email's link confirms its own."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext
    from django.utils import timezone

    from consent.imports import consent_import_record
    from consent.models import OptInRequest
    from consent.optin import optin_confirm

    def queries_for(count: int, prefix: str) -> int:
        since = timezone.now()
        Contact.objects.bulk_create([Contact(email=f"{prefix}{i}@example.com") for i in range(count)])
        with CaptureQueriesContext(connection) as ctx:
            consent_import_record(since=since, job_id=None, source_name=f"{prefix}.csv", basis="confirm")
        return len(ctx.captured_queries)

    queries_for(1, "first")  # makes the confirmation template once
    few, many = queries_for(3, "few"), queries_for(40, "many")
    assert many <= few + 3  # SQLite's driver splits an INSERT at 999 parameters; not one round per contact
    assert OptInRequest.objects.filter(source=ConsentSource.IMPORT).count() == 44
    assert ConsentRecord.objects.filter(status="pending", source=ConsentSource.IMPORT).count() == 44
    messages = Message.objects.filter(source="double opt-in")
    assert messages.count() == 44
    delivery_run_batch(sender=sender, batch_size=100)
    assert len(sink.received) == 44
    mail = next(m for m in messages.select_related("contact") if m.contact.email == "many7@example.com")
    token = mail.context["confirm_url"].rstrip("/").rsplit("/", 1)[1]
    assert optin_confirm(token=token, ip=None).contact.email == "many7@example.com"
    assert Contact.objects.get(email="many7@example.com").consent_status == "granted"
