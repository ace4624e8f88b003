"""IMAP connections (sender profiles' bounce mailboxes) go through core.outbound's address check like
HTTP and SMTP ones: CheckedIMAP4 and CheckedIMAP4_SSL, against the loopback test server."""

from __future__ import annotations

from typing import Any

import pytest

from core.outbound import CheckedIMAP4, CheckedIMAP4_SSL, OutboundRefused
from core.testing.imapserver import imap_server


def test_an_allowed_address_connects_and_logs_in() -> None:
    with imap_server() as server:
        server.add_account("u", "p")
        imap = CheckedIMAP4("127.0.0.1", server.port, timeout=10)
        assert imap.login("u", "p")[0] == "OK"
        imap.logout()


@pytest.mark.parametrize("tls", ["", "implicit"])
def test_an_internal_address_is_refused_before_anything_is_sent(settings: Any, tls: str) -> None:
    settings.OUTBOUND_ALLOWED_NETWORKS = []
    with imap_server(tls=tls) as server:
        cls = CheckedIMAP4_SSL if tls else CheckedIMAP4
        with pytest.raises(OutboundRefused, match="IMAP server 127.0.0.1 is a loopback address"):
            cls("127.0.0.1", server.port, timeout=10)
        with pytest.raises(OutboundRefused, match="IMAP server localhost: .* is a loopback address"):
            cls("localhost", server.port, timeout=10)
        assert server.commands == []
