"""Connectors by kind: `connector_for(connection)` builds the one a connection needs."""

from __future__ import annotations

from typing import TYPE_CHECKING

from automation.crm.connectors.base import Connector, Fate, ItemResult, OutItem, SendResult
from automation.crm.connectors.hubspot import HubSpotConnector
from automation.crm.connectors.salesforce import SalesforceConnector
from automation.crm.connectors.webhook import WebhookConnector

if TYPE_CHECKING:
    from automation.crm.models import CrmConnection

__all__ = ["Connector", "Fate", "ItemResult", "OutItem", "SendResult", "connector_for"]


def connector_for(connection: CrmConnection) -> Connector:
    from automation.crm.models import ConnectionKind
    from automation.crm.vault import connection_token, decrypt

    token = connection_token(token_env=connection.token_env, token_encrypted=connection.token_encrypted)
    if connection.kind == ConnectionKind.HUBSPOT:
        return HubSpotConnector(base_url=connection.base_url, token=token, timeout=connection.timeout_seconds,
                                api_version=connection.api_version)
    if connection.kind == ConnectionKind.SALESFORCE:
        return SalesforceConnector(base_url=connection.base_url, client_id=connection.client_id, client_secret=token,
                                   api_version=connection.api_version, sobject=connection.sf_object,
                                   external_id_field=connection.external_id_field,
                                   timeout=connection.timeout_seconds)
    if connection.kind == ConnectionKind.WEBHOOK:
        return WebhookConnector(url=connection.base_url, token=token,
                                secret=decrypt(connection.signing_secret_encrypted), timeout=connection.timeout_seconds)
    raise ValueError(f"no connector for kind {connection.kind!r}")
