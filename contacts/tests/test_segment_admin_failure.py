"""A segment whose refresh failed says so on its admin page, which is where the operations page's
link lands: when it failed and the error, read-only; the list can be filtered to the failing ones."""

from __future__ import annotations

import datetime as dt
import html

import pytest
from django.test import Client

from contacts.models import Segment

pytestmark = pytest.mark.django_db

FAILED_AT = dt.datetime(2025, 3, 4, 5, 6, tzinfo=dt.UTC)
ERROR = "SegmentError: unknown custom field 'plan' (deleted?)"


@pytest.fixture
def failing() -> Segment:
    return Segment.objects.create(name="Plan set", definition={"all": []}, refresh_failed_at=FAILED_AT,
                                  refresh_error=ERROR)


@pytest.fixture
def healthy() -> Segment:
    return Segment.objects.create(name="VIPs", definition={"all": []})


@pytest.mark.parametrize("role", ["ops", "marketer"])
def test_the_change_page_of_a_failed_segment_shows_the_error(client: Client, role_users, failing: Segment,  # noqa: ANN001
                                                             role: str):
    client.force_login(role_users[role])
    response = client.get(f"/admin/contacts/segment/{failing.pk}/change/")
    assert response.status_code == 200
    page = html.unescape(response.content.decode())
    assert "Last refresh failed" in page
    assert ERROR in page
    assert "March 4, 2025" in page or "2025-03-04" in page
    assert 'name="refresh_error"' not in page  # read-only: the jobs write it, nobody edits it


def test_a_healthy_segment_has_no_failure_section(client: Client, role_users, healthy: Segment):  # noqa: ANN001
    client.force_login(role_users["marketer"])
    page = client.get(f"/admin/contacts/segment/{healthy.pk}/change/").content.decode()
    assert "Last refresh failed" not in page


def test_saving_a_failed_segment_keeps_its_recorded_failure(client: Client, role_users, failing: Segment):  # noqa: ANN001
    client.force_login(role_users["admin"])
    response = client.post(f"/admin/contacts/segment/{failing.pk}/change/",
                           {"name": "Plan set", "description": "", "definition": '{"all": []}', "is_active": "on"})
    assert response.status_code == 302
    failing.refresh_from_db()
    assert (failing.refresh_failed_at, failing.refresh_error) == (FAILED_AT, ERROR)


def test_the_list_filters_segments_whose_refresh_failed(client: Client, role_users, failing: Segment,  # noqa: ANN001
                                                        healthy: Segment):
    client.force_login(role_users["ops"])
    failed_only = client.get("/admin/contacts/segment/?refresh_failed=yes").content.decode()
    assert f"/admin/contacts/segment/{failing.pk}/change/" in failed_only
    assert f"/admin/contacts/segment/{healthy.pk}/change/" not in failed_only
    fine_only = client.get("/admin/contacts/segment/?refresh_failed=no").content.decode()
    assert f"/admin/contacts/segment/{healthy.pk}/change/" in fine_only
    assert f"/admin/contacts/segment/{failing.pk}/change/" not in fine_only
