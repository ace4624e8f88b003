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
