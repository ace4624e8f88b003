"""Fixtures shared by every app's tests: role users, the browser, CI's no-skip rule."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from typing import Any

import pytest
from django.contrib.auth.models import Group, User

from core import roles

IN_CI = os.environ.get("CI", "").lower() == "true"
CHROMIUM_FLAGS = [
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """In CI every test must run: a skip is a failure (postgres and browser included)."""
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = len(reporter.stats.get("skipped", [])) if reporter else 0
    if IN_CI and skipped and reporter and session.exitstatus == 0:
        reporter.write_line(f"CI=true: {skipped} test(s) skipped; failing the run", red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """`postgres_only` tests are deselected on the SQLite pass and `sqlite_only` ones on the
    PostgreSQL pass, not skipped: CI fails on any skip, and the other pass of the suite runs them."""
    other = "sqlite_only" if os.environ.get("TEST_DATABASE", "sqlite") == "postgres" else "postgres_only"
    dropped = [item for item in items if item.get_closest_marker(other)]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = [item for item in items if not item.get_closest_marker(other)]


def make_user(username: str, role: str | None, *, superuser: bool = False) -> User:
    user = User.objects.create_user(username=username, password="pw-" + username, email=f"{username}@example.com")
    user.is_staff = True
    user.is_superuser = superuser
    user.save()
    if role:
        if not Group.objects.filter(name=role).exists():
            roles.sync_roles()  # transactional tests flush the groups the migration made
        user.groups.add(Group.objects.get(name=role))
    return user


@pytest.fixture
def role_users(db: None) -> dict[str, User]:
    """One staff user per role, plus an admin and a staff user with no role (the outsider)."""
    return {
        "marketer": make_user("marketer", roles.MARKETER),
        "approver": make_user("approver", roles.APPROVER),
        "sales": make_user("sales", roles.SALES),
        "ops": make_user("ops", roles.OPS),
        "admin": make_user("admin", None, superuser=True),
        "outsider": make_user("outsider", None),
    }


@pytest.fixture
def sink() -> Iterator[Any]:
    """A real SMTP server on loopback that keeps what it receives (core/testing/smtpsink.py)."""
    from core.testing.smtpsink import SmtpSink

    with SmtpSink() as smtp:
        yield smtp


@pytest.fixture
def sender(db: None, sink: Any) -> Any:
    """The default sender profile, delivering to `sink` (fast enough that tests never wait on it)."""
    from campaigns.models import SenderProfile

    return SenderProfile.objects.create(name="Main", from_email="news@leadflow.test", from_name="Leadflow",
                                        email_url=sink.url, rate="1000/s", burst=100, is_default=True,
                                        postal_address="1 Example Street, Springfield")


def chromium_path() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    executable = chromium_path()
    if executable is None:
        if IN_CI:
            pytest.fail("CI=true but no chromium found: .ci/run should have installed Debian's chromium")
        pytest.skip("chromium is not installed (apt-get install chromium); CI installs it and runs this")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        instance = p.chromium.launch(executable_path=executable, args=CHROMIUM_FLAGS)
        yield instance
        instance.close()


@pytest.fixture
def page(browser: Any, live_server: Any) -> Iterator[Any]:
    context = browser.new_context(base_url=live_server.url)
    context.set_default_timeout(15_000)
    pg = context.new_page()
    yield pg
    context.close()


def admin_login(page: Any, username: str, password: str) -> None:
    page.goto("/admin/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", password)
    page.click("input[type=submit]")
    # Each role's home: /admin/ for marketers, /leads/ for Sales, the operations page for Ops.
    page.wait_for_url(lambda url: "/admin/login/" not in url)
