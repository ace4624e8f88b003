"""What each role may and may not do in the admin (the table in core/roles.py)."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User
from django.test import Client

from contacts.models import Contact

pytestmark = pytest.mark.django_db

CONTACTS = "/admin/contacts/contact/"
ALLOWED, FORBIDDEN = 200, 403


def client_for(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def contact() -> Contact:
    return Contact.objects.create(email="lead@acme.example", first_name="Lead")


@pytest.mark.parametrize(
    ("role", "expected"),
    [("marketer", ALLOWED), ("approver", ALLOWED), ("sales", ALLOWED), ("ops", ALLOWED), ("outsider", FORBIDDEN)],
)
def test_who_can_list_contacts(role_users: dict[str, User], contact: Contact, role: str, expected: int) -> None:
    response = client_for(role_users[role]).get(CONTACTS)
    assert response.status_code == expected
    if expected == ALLOWED:
        assert b"lead@acme.example" in response.content


@pytest.mark.parametrize(
    ("role", "expected"),
    [("marketer", ALLOWED), ("approver", ALLOWED), ("sales", FORBIDDEN), ("ops", FORBIDDEN), ("outsider", FORBIDDEN)],
)
def test_who_can_open_the_add_form(role_users: dict[str, User], role: str, expected: int) -> None:
    assert client_for(role_users[role]).get(CONTACTS + "add/").status_code == expected


def change_payload(contact: Contact, **overrides: str) -> dict[str, str]:
    data = {
        "email": contact.email, "first_name": contact.first_name, "last_name": "", "company": "", "job_title": "",
        "phone": "", "country": "", "lifecycle_stage": "lead", "consent_status": "unknown", "consent_source": "",
        "consent_at_0": "", "consent_at_1": "", "attributes": "{}",
    }
    return {**data, **overrides}


@pytest.mark.parametrize("role", ["marketer", "approver"])
def test_editors_can_change_a_contact(role_users: dict[str, User], contact: Contact, role: str) -> None:
    response = client_for(role_users[role]).post(
        f"{CONTACTS}{contact.pk}/change/", change_payload(contact, first_name="Changed", email=" Lead@ACME.example ")
    )
    assert response.status_code == 302, response.content[:2000]
    contact.refresh_from_db()
    assert contact.first_name == "Changed"
    assert contact.email == "lead@acme.example"


@pytest.mark.parametrize("role", ["sales", "ops", "outsider"])
def test_read_only_roles_cannot_change_or_delete(role_users: dict[str, User], contact: Contact, role: str) -> None:
    client = client_for(role_users[role])
    change = client.post(f"{CONTACTS}{contact.pk}/change/", change_payload(contact, first_name="Hacked"))
    delete = client.post(f"{CONTACTS}{contact.pk}/delete/", {"post": "yes"})
    assert change.status_code == FORBIDDEN
    assert delete.status_code == FORBIDDEN
    contact.refresh_from_db()
    assert contact.first_name == "Lead"


def test_sales_sees_the_change_page_read_only(role_users: dict[str, User], contact: Contact) -> None:
    response = client_for(role_users["sales"]).get(f"{CONTACTS}{contact.pk}/change/")
    assert response.status_code == 200
    assert b'name="first_name"' not in response.content  # no editable inputs
    assert b"Lead" in response.content


def test_marketer_can_delete(role_users: dict[str, User], contact: Contact) -> None:
    response = client_for(role_users["marketer"]).post(f"{CONTACTS}{contact.pk}/delete/", {"post": "yes"})
    assert response.status_code == 302
    assert not Contact.objects.filter(pk=contact.pk).exists()


@pytest.mark.parametrize(
    ("role", "expected"),
    [("ops", ALLOWED), ("admin", ALLOWED), ("marketer", FORBIDDEN), ("approver", FORBIDDEN), ("sales", FORBIDDEN)],
)
def test_only_ops_sees_the_queue_dashboard(role_users: dict[str, User], role: str, expected: int) -> None:
    assert client_for(role_users[role]).get("/admin/rq/").status_code == expected


def test_queue_dashboard_sends_anonymous_users_to_login(client: Client) -> None:
    response = client.get("/admin/rq/")
    assert response.status_code == 302
    assert response["Location"].startswith("/admin/login/")


@pytest.mark.parametrize(
    ("role", "expected"), [("ops", ALLOWED), ("marketer", FORBIDDEN), ("sales", FORBIDDEN)]
)
def test_only_ops_reads_worker_heartbeats(role_users: dict[str, User], role: str, expected: int) -> None:
    assert client_for(role_users[role]).get("/admin/core/heartbeat/").status_code == expected


def test_roles_migration_created_every_group() -> None:
    from django.contrib.auth.models import Group

    from core.roles import ROLE_PERMISSIONS

    for role, perms in ROLE_PERMISSIONS.items():
        group = Group.objects.get(name=role)
        have = {f"{p.content_type.app_label}.{p.codename}" for p in group.permissions.select_related("content_type")}
        assert have == set(perms)
