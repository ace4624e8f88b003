from __future__ import annotations

import pytest
from django.contrib.auth.models import User
from django.core.management import CommandError, call_command
from django.test import Client, override_settings

from contacts.models import Contact
from core.demo import read_credentials

pytestmark = pytest.mark.django_db


@override_settings(DEBUG=True)
def test_seed_demo_creates_contacts_and_one_login_per_role(capsys: pytest.CaptureFixture[str]) -> None:
    call_command("seed_demo")
    out = capsys.readouterr().out
    assert Contact.objects.count() == 300
    assert Contact.objects.filter(is_test=True).count() == 5
    creds = read_credentials()
    assert set(creds) == {"admin", "marketer", "approver", "sales", "ops"}
    for username, password in creds.items():
        assert f"{username}" in out
        assert password in out
        # Through the login form: axes' backend (login throttling) needs the request, which login() lacks.
        login = Client().post("/admin/login/", {"username": username, "password": password, "next": "/admin/"})
        assert login.status_code == 302
        assert login["Location"] == "/admin/"
    assert User.objects.get(username="sales").groups.get().name == "Sales"
    assert User.objects.get(username="admin").is_superuser
    # delivery works out of the box: a default sender and templates that render
    from campaigns.models import EmailTemplate, SenderProfile
    from campaigns.services import message_preview

    assert SenderProfile.objects.get(is_default=True).name == "Default"
    for template in EmailTemplate.objects.all():
        template.full_clean()
        assert message_preview(template=template, contact=Contact.objects.all()[0]).subject


@override_settings(DEBUG=True)
def test_seed_demo_twice_adds_nothing_and_keeps_passwords() -> None:
    call_command("seed_demo")
    first = read_credentials()
    call_command("seed_demo")
    assert Contact.objects.count() == 300
    assert read_credentials() == first
    from campaigns.models import EmailTemplate, SenderProfile

    assert (SenderProfile.objects.count(), EmailTemplate.objects.count()) == (1, 2)


@override_settings(DEBUG=False)
def test_seed_demo_refuses_in_production() -> None:
    with pytest.raises(CommandError, match="DEBUG off"):
        call_command("seed_demo")
    assert not User.objects.exists()
