"""Outbound connections (core/outbound.py): internal addresses are refused on the address actually
connected to, redirects are not followed, error answers are described by status only (issue 14)."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.utils import timezone

from config.env import env_networks
from core import outbound
from core.alerts import _notify
from core.models import Incident
from core.testing.receiver import Receiver


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as r:
        yield r


@pytest.fixture
def no_internal(settings: Any) -> None:
    """Production's default: no network allowed besides public addresses."""
    settings.OUTBOUND_ALLOWED_NETWORKS = []


@pytest.fixture
def rebinding_dns(monkeypatch: pytest.MonkeyPatch) -> None:
    """DNS answering 127.0.0.1 for rebind.example (public when the URL was saved, internal now)."""
    real = socket.getaddrinfo

    def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        return real("127.0.0.1" if host == "rebind.example" else host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


@pytest.mark.parametrize(("ip", "kind"), [
    ("127.0.0.1", "loopback"), ("::1", "loopback"), ("10.1.2.3", "private"), ("172.16.0.1", "private"),
    ("192.168.1.1", "private"), ("169.254.169.254", "cloud metadata"), ("fd00:ec2::254", "cloud metadata"),
    ("169.254.1.1", "link-local"), ("fe80::1", "link-local"), ("100.64.0.1", "CGNAT"), ("0.0.0.0", "unspecified"),  # noqa: S104
    ("224.0.0.1", "multicast"), ("240.0.0.1", "reserved"), ("::ffff:127.0.0.1", "loopback"),
    ("::ffff:169.254.169.254", "cloud metadata"), ("fc00::1", "private"),
])
def test_internal_addresses_are_refused_with_what_they_are(no_internal: None, ip: str, kind: str) -> None:
    reason = outbound.address_refusal(ip)
    assert reason is not None
    assert kind in reason


@pytest.mark.parametrize("ip", ["93.184.216.34", "8.8.8.8", "2606:4700:4700::1111"])
def test_public_addresses_are_allowed(no_internal: None, ip: str) -> None:
    assert outbound.address_refusal(ip) is None


def test_a_listed_network_is_allowed_and_nothing_else(settings: Any) -> None:
    settings.OUTBOUND_ALLOWED_NETWORKS = ["10.0.0.0/8"]
    assert outbound.address_refusal("10.20.30.40") is None
    assert outbound.address_refusal("::ffff:10.20.30.40") is None
    assert outbound.address_refusal("192.168.0.1") is not None
    assert outbound.address_refusal("169.254.169.254") is not None


def test_a_loopback_server_that_would_answer_is_refused_at_connect_time(no_internal: None, receiver: Receiver) -> None:
    for url in (receiver.url + "/hook", receiver.url.replace("127.0.0.1", "localhost") + "/hook"):
        with pytest.raises(outbound.OutboundRefused, match="loopback"):
            outbound.post(url, data=b"{}", headers={}, timeout=5)
    assert receiver.hits == []


def test_the_resolved_address_is_checked_not_the_name(no_internal: None, rebinding_dns: None,
                                                      receiver: Receiver) -> None:
    # given a URL whose name passed the save-time check (names are not resolved then)
    url = f"http://rebind.example:{receiver.server.server_address[1]}/hook"
    assert outbound.url_problem(url) is None
    # when it now resolves to loopback, the connection is refused before anything is sent
    with pytest.raises(outbound.OutboundRefused, match="rebind.example: 127.0.0.1 is a loopback address"):
        outbound.post(url, data=b"{}", headers={}, timeout=5)
    assert receiver.hits == []


def test_an_allowed_name_connects_to_the_checked_address_and_keeps_its_host_header(
        rebinding_dns: None, receiver: Receiver) -> None:
    port = receiver.server.server_address[1]
    response = outbound.post(f"http://rebind.example:{port}/hook", data=b"{}", headers={}, timeout=5)
    assert response.status_code == 200
    assert receiver.hits[0].headers["Host"] == f"rebind.example:{port}"


def test_redirects_are_not_followed_and_the_body_not_repeated(receiver: Receiver) -> None:
    # given an internal service, and a server that answers 307 to it (a 307 re-sends the POST body)
    with Receiver(status=307, headers={"Location": receiver.url + "/admin"}, body=b"moved") as redirecting:
        response = outbound.post(redirecting.url + "/hook", data=b'{"signed": 1}', headers={}, timeout=5)
        assert len(redirecting.hits) == 1
    assert response.status_code == 307
    assert receiver.hits == []
    assert outbound.status_text(response) == "307 Temporary Redirect (redirects are not followed)"


def test_status_text_is_the_status_and_standard_phrase_only() -> None:
    with Receiver(status=500, body=b"root:x:0:0 internal secret") as r:
        response = outbound.post(r.url, data=b"{}", headers={}, timeout=5)
    assert outbound.status_text(response) == "500 Internal Server Error"


def test_environment_proxies_are_not_used(monkeypatch: pytest.MonkeyPatch, receiver: Receiver) -> None:
    # a proxy would connect on our behalf, to wherever it is told, unchecked
    monkeypatch.setenv("HTTP_PROXY", "http://10.255.255.1:3128")
    assert outbound.post(receiver.url, data=b"{}", headers={}, timeout=5).status_code == 200


@pytest.mark.parametrize(("url", "problem"), [
    ("http://169.254.169.254/latest/meta-data/", "cloud metadata"), ("http://127.0.0.1:8000/x", "loopback"),
    ("http://localhost:6379/", "loopback"), ("http://[::1]/", "loopback"), ("http://10.0.0.5/", "private"),
    ("ftp://crm.example.com/", "http:// or https://"), ("http:///path", "no host"),
])
def test_save_time_check_names_the_problem(no_internal: None, url: str, problem: str) -> None:
    found = outbound.url_problem(url)
    assert found is not None
    assert problem in found


def test_save_time_check_accepts_a_public_name(no_internal: None) -> None:
    assert outbound.url_problem("https://api.hubapi.com") is None


def test_bad_allowed_networks_setting_fails_loudly(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OUTBOUND_ALLOWED_NETWORKS", "10.0.0.0/8, intranet")
    with pytest.raises(ImproperlyConfigured, match="OUTBOUND_ALLOWED_NETWORKS: 'intranet'"):
        env_networks("OUTBOUND_ALLOWED_NETWORKS", [])
    monkeypatch.setenv("OUTBOUND_ALLOWED_NETWORKS", "10.0.0.0/8, ::1")
    assert env_networks("OUTBOUND_ALLOWED_NETWORKS", []) == ["10.0.0.0/8", "::1/128"]


@pytest.mark.django_db
def test_the_alert_webhook_is_refused_on_an_internal_address(no_internal: None, settings: Any,
                                                             receiver: Receiver) -> None:
    settings.ALERT_EMAILS, settings.ALERT_WEBHOOK_URL = [], receiver.url + "/pager"
    incident = Incident.objects.create(key="test", summary="test", detail={}, opened_at=timezone.now())
    assert _notify(incident) == 0
    assert receiver.hits == []
    assert "loopback" in Incident.objects.get(pk=incident.pk).notify_error


@pytest.mark.django_db
def test_the_alert_webhook_does_not_follow_a_redirect(settings: Any, receiver: Receiver) -> None:
    with Receiver(status=307, headers={"Location": receiver.url + "/internal"}) as redirecting:
        settings.ALERT_EMAILS, settings.ALERT_WEBHOOK_URL = [], redirecting.url + "/pager"
        incident = Incident.objects.create(key="test", summary="test", detail={}, opened_at=timezone.now())
        assert _notify(incident) == 0
    assert receiver.hits == []
    assert Incident.objects.get(pk=incident.pk).notify_error == \
        "webhook: HTTP 307 Temporary Redirect (redirects are not followed)"
