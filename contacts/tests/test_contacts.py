from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction

from contacts.emails import normalize_email
from contacts.models import Contact
from contacts.services import contact_upsert

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("  Ann@Example.COM ", "ann@example.com"), ("BOB.Smith+news@Sub.Example.org", "bob.smith+news@sub.example.org")],
)
def test_emails_are_trimmed_and_lower_cased_as_one_rule(raw: str, expected: str) -> None:
    assert normalize_email(raw) == expected


@pytest.mark.parametrize("raw", ["", "   ", "not-an-email", "a@", "@b.com", "a@b", "a b@c.com"])
def test_invalid_emails_are_rejected(raw: str) -> None:
    with pytest.raises(ValidationError):
        normalize_email(raw)


def test_upsert_creates_then_updates_the_same_person_whatever_the_case() -> None:
    contact, created = contact_upsert(email="Ann@Example.com", first_name="Ann")
    assert created
    assert contact.email == "ann@example.com"
    again, created_again = contact_upsert(email=" ANN@example.COM", company="Acme")
    assert not created_again
    assert again.pk == contact.pk
    again.refresh_from_db()
    assert (again.first_name, again.company) == ("Ann", "Acme")
    assert Contact.objects.count() == 1


def test_upsert_validates_fields() -> None:
    with pytest.raises(ValidationError) as err:
        contact_upsert(email="x@example.com", lifecycle_stage="king")
    assert "lifecycle_stage" in err.value.message_dict
    assert not Contact.objects.exists()


def test_upsert_rejects_unknown_fields() -> None:
    with pytest.raises(TypeError, match="favourite_colour"):
        contact_upsert(email="x@example.com", favourite_colour="blue")


def test_upsert_normalises_country() -> None:
    contact, _ = contact_upsert(email="x@example.com", country=" de ")
    assert contact.country == "DE"


def test_the_database_refuses_unnormalised_emails_written_around_the_services() -> None:
    Contact.objects.create(email="ok@example.com")
    with pytest.raises(IntegrityError), transaction.atomic():
        Contact.objects.filter(email="ok@example.com").update(email="Not.Normal@Example.com")
    with pytest.raises(IntegrityError), transaction.atomic():
        Contact.objects.create(email=" padded@example.com")


def test_the_database_refuses_duplicate_emails() -> None:
    Contact.objects.create(email="dup@example.com")
    with pytest.raises(IntegrityError), transaction.atomic():
        Contact.objects.create(email="dup@example.com")


def test_the_database_refuses_unknown_stages_and_consent() -> None:
    with pytest.raises(IntegrityError), transaction.atomic():
        Contact.objects.create(email="a@example.com", lifecycle_stage="king")
    with pytest.raises(IntegrityError), transaction.atomic():
        Contact.objects.create(email="b@example.com", consent_status="maybe")


def test_erasure_removes_the_contact_and_its_links_and_audits_without_personal_data(
    role_users: dict[str, object],
) -> None:
    from contacts.models import ContactList, Tag
    from contacts.services import contact_erase
    from core.models import AuditEntry

    contact = Contact.objects.create(email="gone@x.example", first_name="Gone")
    contact.tags.add(Tag.objects.create(name="vip"))
    contact.lists.add(ContactList.objects.create(name="Newsletter"))
    keep = Contact.objects.create(email="stay@x.example")
    entry = contact_erase(contact=contact, actor=role_users["marketer"])
    assert list(Contact.objects.all()) == [keep]
    assert Contact.tags.through.objects.count() == 0
    assert Contact.lists.through.objects.count() == 0
    assert (entry.action, entry.actor_label, entry.data) == ("contact.erased", "marketer", {"tags": 1, "lists": 1})
    stored = " ".join(str(v) for v in AuditEntry.objects.values_list("target_id", "data", "actor_label").get())
    assert "gone" not in stored.lower()


def test_export_data_holds_everything_about_the_contact() -> None:
    import json

    from contacts.models import Tag
    from contacts.services import contact_export_data

    contact, _ = contact_upsert(email="me@x.example", first_name="Me", consent_status="granted",
                                consent_source="form")
    contact.tags.add(Tag.objects.create(name="vip"))
    data = json.loads(json.dumps(contact_export_data(contact=contact)))  # plain JSON all the way
    assert data["contact"]["email"] == "me@x.example"
    assert data["contact"]["tags"] == ["vip"]
    assert data["contact"]["consent_status"] == "granted"
    assert data["contact"]["first_name"] == "Me"
