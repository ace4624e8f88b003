"""Smoke test in a real browser: a marketer logs in and sees the contacts list."""

from __future__ import annotations

from typing import Any

import pytest

from conftest import admin_login, make_user
from contacts.models import Contact
from core import roles
from core.testing.artifacts import screenshot_path

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_marketer_logs_in_and_sees_contacts(page: Any) -> None:
    make_user("marketer", roles.MARKETER)
    Contact.objects.create(email="ada@acme.example", first_name="Ada", company="Acme")
    admin_login(page, "marketer", "pw-marketer")
    page.click("#content-main a[href='/admin/contacts/contact/']")
    page.wait_for_url("**/admin/contacts/contact/")
    assert page.locator("#result_list").inner_text().count("ada@acme.example") == 1
    assert page.locator(".object-tools a.addlink").count() == 1  # marketers may add
    page.screenshot(path=screenshot_path("marketer-contacts"))
