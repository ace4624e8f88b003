from __future__ import annotations

import csv
import io

import pytest
from django.contrib.auth.models import User
from django.test import Client

from contacts.models import Contact

pytestmark = pytest.mark.django_db


@pytest.fixture
def marketer_client(role_users: dict[str, User]) -> Client:
    client = Client()
    client.force_login(role_users["marketer"])
    return client


def test_contact_search_and_filters(marketer_client: Client) -> None:
    Contact.objects.create(email="ann@acme.example", company="Acme", lifecycle_stage="lead")
    Contact.objects.create(email="bob@globex.example", company="Globex", lifecycle_stage="customer", is_test=True)
    found = marketer_client.get("/admin/contacts/contact/", {"q": "acme"}).content
    assert b"ann@acme.example" in found
    assert b"bob@globex.example" not in found
    tests_only = marketer_client.get("/admin/contacts/contact/", {"is_test__exact": "1"}).content
    assert b"bob@globex.example" in tests_only
    assert b"ann@acme.example" not in tests_only
    customers = marketer_client.get("/admin/contacts/contact/", {"lifecycle_stage__exact": "customer"}).content
    assert b"bob@globex.example" in customers
    assert b"ann@acme.example" not in customers


def test_admin_add_form_normalises_and_dedupes(marketer_client: Client) -> None:
    Contact.objects.create(email="ann@acme.example")
    form = {
        "email": "ANN@acme.example", "lifecycle_stage": "lead", "consent_status": "unknown", "attributes": "{}",
        "consent_at_0": "", "consent_at_1": "",
    }
    response = marketer_client.post("/admin/contacts/contact/add/", form)
    assert response.status_code == 200  # form redisplayed with the error
    assert b"Contact with this Email already exists" in response.content
    assert Contact.objects.count() == 1


def test_csv_export_escapes_formulas(marketer_client: Client) -> None:
    Contact.objects.create(email="evil@example.com", first_name='=HYPERLINK("http://evil.example","x")')
    response = marketer_client.post(
        "/admin/contacts/contact/export/", {"format": "0", "export_items": [], "resource": "0",
                                            **{f"contactresource_{f}": "on" for f in ("email", "first_name")}},
    )
    assert response.status_code == 200, response.content[:1000]
    rows = list(csv.DictReader(io.StringIO(response.content.decode())))
    assert rows[0]["email"] == "evil@example.com"
    assert not rows[0]["first_name"].startswith("=")
    assert "HYPERLINK" in rows[0]["first_name"]


def test_xlsx_export_escapes_formulas(marketer_client: Client) -> None:
    import re

    from openpyxl import load_workbook

    Contact.objects.create(email="evil@example.com", first_name="=cmd|' /C calc'!A0")
    page = marketer_client.get("/admin/contacts/contact/export/").content.decode()
    match = re.search(r'<option value="(\d+)"[^>]*>\s*xlsx\s*</option>', page)
    assert match, "XLSX is offered"
    response = marketer_client.post(
        "/admin/contacts/contact/export/",
        {"format": match.group(1), "export_items": [], "resource": "0",
         **{f"contactresource_{f}": "on" for f in ("email", "first_name")}},
    )
    assert response.status_code == 200
    sheet = load_workbook(io.BytesIO(response.content)).active
    cells = [str(c.value) for row in sheet.iter_rows() for c in row if c.value is not None]
    assert "evil@example.com" in cells
    assert not any(c.startswith("=") for c in cells)


def test_deleting_a_contact_in_the_admin_is_an_audited_erasure(marketer_client: Client) -> None:
    from core.models import AuditEntry

    one = Contact.objects.create(email="one@x.example")
    two = Contact.objects.create(email="two@x.example")
    assert marketer_client.post(f"/admin/contacts/contact/{one.pk}/delete/", {"post": "yes"}).status_code == 302
    marketer_client.post("/admin/contacts/contact/", {"action": "delete_selected", "_selected_action": [two.pk],
                                                      "post": "yes"})
    assert not Contact.objects.exists()
    erased = AuditEntry.objects.filter(action="contact.erased").values_list("target_id", flat=True)
    assert sorted(erased) == sorted([str(one.pk), str(two.pk)])


def test_exporting_a_contacts_data_is_audited(marketer_client: Client) -> None:
    from core.models import AuditEntry

    contact = Contact.objects.create(email="me@x.example")
    response = marketer_client.get(f"/admin/contacts/contact/{contact.pk}/export-data/")
    assert response.status_code == 200
    entry = AuditEntry.objects.get(action="contact.data_exported")
    assert (entry.target_id, entry.actor_label) == (str(contact.pk), "marketer")
