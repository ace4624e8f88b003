"""`manage.py check --deploy` refuses an http SITE_URL when DEBUG is off (issue 17, item 6): behind
SECURE_SSL_REDIRECT a one-click unsubscribe POST would be answered by a redirect."""

from __future__ import annotations

import pytest
from django.core.checks import run_checks
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django.test import Client, override_settings

from core.checks import E_SITE_URL_HTTP


def ours(*, deploy: bool) -> list[str]:
    return [m.id for m in run_checks(include_deployment_checks=deploy) if m.id == E_SITE_URL_HTTP]


@override_settings(DEBUG=False, SITE_URL="http://leadflow.example.com", SECURE_SSL_REDIRECT=True)
def test_check_deploy_fails_on_an_http_site_url() -> None:
    with pytest.raises(SystemCheckError, match=r"leadflow\.E001.*SITE_URL is 'http://leadflow\.example\.com'"):
        call_command("check", "--deploy")
    assert ours(deploy=False) == []  # a deployment check only: `migrate` and the test suite are not stopped


@override_settings(DEBUG=False, SITE_URL="https://leadflow.example.com")
def test_an_https_site_url_passes() -> None:
    assert ours(deploy=True) == []


@override_settings(DEBUG=True, SITE_URL="http://localhost:8000")
def test_http_is_fine_while_developing() -> None:
    assert ours(deploy=True) == []


@pytest.mark.django_db
@override_settings(DEBUG=False, SECURE_SSL_REDIRECT=True, SITE_URL="http://leadflow.example.com")
def test_why_the_check_exists_the_redirect_answers_the_one_click_post() -> None:
    """What the check prevents: the provider POSTs to the http URL it was given and gets a 301."""
    response = Client().post("/e/u/1:whatever", {"List-Unsubscribe": "One-Click"})
    assert response.status_code == 301
    assert response["Location"].startswith("https://")
