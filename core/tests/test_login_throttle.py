"""Admin login throttling (django-axes, core/login_throttle.py): wrong passwords lock a username
at an address out, with a message and an audit entry; nobody else is affected; the lockout ends
after the cool-off or when Ops clears it."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from axes.models import AccessAttempt
from django.conf import settings
from django.contrib.auth.models import User
from django.core.management import call_command
from django.test import Client
from django.utils import timezone

from core.models import AuditEntry

pytestmark = pytest.mark.django_db

LOGIN = "/admin/login/"
OFFICE, HOME = "192.0.2.10", "198.51.100.7"


def log_in(username: str, password: str, *, ip: str = OFFICE, client: Client | None = None, **headers: Any) -> Any:
    client = client or Client()
    return client.post(LOGIN, {"username": username, "password": password, "next": "/admin/"},
                       REMOTE_ADDR=ip, **headers)


def fail(username: str, times: int, *, ip: str = OFFICE, **headers: Any) -> None:
    for n in range(1, times + 1):
        status = log_in(username, "wrong-password", ip=ip, **headers).status_code
        assert status == (429 if n >= settings.LOGIN_FAILURE_LIMIT else 200)  # the form with its error, then locked


def logged_in(response: Any) -> bool:
    return response.status_code == 302 and response["Location"] == "/admin/"


def test_the_right_password_after_too_many_wrong_ones_is_refused_with_a_message(role_users: dict[str, User],
                                                                                 settings: Any) -> None:
    fail("sales", settings.LOGIN_FAILURE_LIMIT)

    response = log_in("sales", "pw-sales")

    assert response.status_code == 429
    assert b"Too many failed logins" in response.content
    assert b"15 minutes" in response.content
    assert b'name="password"' in response.content  # still the login page, not a bare error
    assert "_auth_user_id" not in response.wsgi_request.session


def test_a_lockout_is_audited_once(role_users: dict[str, User], settings: Any) -> None:
    fail("sales", settings.LOGIN_FAILURE_LIMIT + 3)
    log_in("sales", "pw-sales")

    entry = AuditEntry.objects.get(action="login.locked_out")
    assert entry.target_id == "sales"
    assert entry.data["ip"] == OFFICE


def test_other_users_and_other_addresses_are_unaffected(role_users: dict[str, User], settings: Any) -> None:
    fail("sales", settings.LOGIN_FAILURE_LIMIT)

    assert logged_in(log_in("marketer", "pw-marketer", ip=OFFICE))  # a colleague at the same address
    assert logged_in(log_in("sales", "pw-sales", ip=HOME))  # the same user elsewhere


def test_a_forged_forwarded_for_header_does_not_escape_the_lockout(role_users: dict[str, User],
                                                                   settings: Any) -> None:
    fail("sales", settings.LOGIN_FAILURE_LIMIT)

    assert log_in("sales", "pw-sales", HTTP_X_FORWARDED_FOR=HOME).status_code == 429


def test_behind_a_trusted_proxy_the_address_it_saw_counts(role_users: dict[str, User], settings: Any) -> None:
    settings.TRUSTED_PROXY_COUNT = 1
    proxy = "10.0.0.2"
    # The client forges the left entry; the proxy appends the address it saw.
    fail("sales", settings.LOGIN_FAILURE_LIMIT, ip=proxy, HTTP_X_FORWARDED_FOR=f"{HOME}, {OFFICE}")

    assert log_in("sales", "pw-sales", ip=proxy, HTTP_X_FORWARDED_FOR=OFFICE).status_code == 429
    assert logged_in(log_in("sales", "pw-sales", ip=proxy, HTTP_X_FORWARDED_FOR=HOME))
    assert set(AccessAttempt.objects.values_list("ip_address", flat=True)) == {OFFICE}


def test_spraying_many_usernames_from_one_address_locks_the_address(role_users: dict[str, User],
                                                                    settings: Any) -> None:
    settings.LOGIN_IP_FAILURE_LIMIT = 6
    for n in range(6):  # one guess per username: under the per-user limit for every one of them
        log_in(f"guess{n}", "Summer2024!")

    assert log_in("marketer", "pw-marketer").status_code == 429
    assert logged_in(log_in("marketer", "pw-marketer", ip=HOME))


def test_the_lockout_ends_after_the_cool_off(role_users: dict[str, User], settings: Any) -> None:
    fail("sales", settings.LOGIN_FAILURE_LIMIT)
    assert log_in("sales", "pw-sales").status_code == 429

    # Time passes: the failures are now older than the cool-off (axes compares attempt_time to now).
    AccessAttempt.objects.update(attempt_time=timezone.now() - timedelta(minutes=settings.LOGIN_COOLOFF_MINUTES + 1))

    assert logged_in(log_in("sales", "pw-sales"))


def test_axes_reset_command_clears_a_lockout(role_users: dict[str, User], settings: Any) -> None:
    fail("sales", settings.LOGIN_FAILURE_LIMIT)
    call_command("axes_reset_username", "sales")
    assert logged_in(log_in("sales", "pw-sales"))


def test_ops_sees_and_clears_a_lockout_in_the_admin(role_users: dict[str, User], settings: Any) -> None:
    fail("sales", settings.LOGIN_FAILURE_LIMIT)
    attempt = AccessAttempt.objects.get(username="sales")
    ops = Client()
    ops.force_login(role_users["ops"])

    assert b"sales" in ops.get("/admin/axes/accessattempt/").content
    assert ops.post(f"/admin/axes/accessattempt/{attempt.pk}/delete/", {"post": "yes"}).status_code == 302

    assert logged_in(log_in("sales", "pw-sales"))


def test_marketers_cannot_clear_lockouts(role_users: dict[str, User], settings: Any) -> None:
    fail("sales", settings.LOGIN_FAILURE_LIMIT)
    marketer = Client()
    marketer.force_login(role_users["marketer"])
    assert marketer.get("/admin/axes/accessattempt/").status_code == 403
