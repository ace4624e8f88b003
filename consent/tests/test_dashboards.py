"""Dashboards tell the truth (issue 20): a workflow email that was not sent (no consent, a left
topic) is counted as suppressed, apart from sent ones, with its reason, on the workflow
dashboard and on the operations page."""

from __future__ import annotations

import pytest
from django.test import Client
from django.urls import reverse

from automation.selectors import workflow_dashboard
from automation.tests.conftest import advance, deploy, emit, wf_file
from campaigns.delivery import delivery_run_batch
from campaigns.tests.conftest import make_contact, make_template
from contacts.models import ConsentStatus
from core.ops import delivery_stats

pytestmark = pytest.mark.django_db


def test_suppressed_sends_are_counted_apart_with_their_reason(client: Client, sender, sink, role_users):  # noqa: ANN001
    make_template("news")
    workflow = deploy(wf_file("news", steps=[{"id": "mail", "type": "send_email", "template": "news"}]))
    emit(make_contact("yes@example.com"), "signed_up")
    emit(make_contact("unknown@example.com", consent_status=ConsentStatus.UNKNOWN), "signed_up")
    advance()
    delivery_run_batch(sender=sender)

    dashboard = workflow_dashboard(workflow=workflow)
    assert (dashboard.steps["mail"]["sent"], dashboard.steps["mail"]["suppressed"]) == (1, 1)
    assert dashboard.suppressed_reasons == [("mail", "no_consent", 1)]
    assert delivery_stats().suppressed_by_reason == {"no_consent": 1}

    client.force_login(role_users["marketer"])
    versions = client.get(reverse("admin:automation_workflow_versions", args=[workflow.pk])).content.decode()
    assert 'id="dashboard-suppressed"' in versions
    assert '<td class="reason">no_consent</td>' in versions
    client.force_login(role_users["ops"])
    operations = client.get(reverse("operations")).content.decode()
    assert 'id="suppressed-reasons"' in operations
    assert "no_consent" in operations
