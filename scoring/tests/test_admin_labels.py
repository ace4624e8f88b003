"""Labels a marketer reads in the admin (issue 19)."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User
from django.test import Client

pytestmark = pytest.mark.django_db


def test_score_entries_are_spelled_right_in_the_admin(role_users: dict[str, User]) -> None:
    client = Client()
    client.force_login(role_users["marketer"])
    index = client.get("/admin/").content.decode()
    assert "Score entries" in index
    assert "entrys" not in index.lower()
