"""A new API key admits a signup form posting one event per signup at 50 requests/s (issue 25):
3,000 requests in a minute, with room for a peak, and still a limit (docs/event-api.md, "Limits")."""

from __future__ import annotations

import pytest
from django.core.management import call_command

from contacts.api import ratelimit
from contacts.apikeys import api_key_create
from contacts.models import ApiKey
from core.queues import get_connection

SIGNUP_FORM_PER_MINUTE = 50 * 60


@pytest.fixture(autouse=True)
def empty_redis() -> None:
    get_connection().flushdb()


def test_every_way_of_making_a_key_defaults_to_room_for_a_50_per_second_signup_form(db: None) -> None:
    by_service = api_key_create(name="service")[0]
    call_command("create_api_key", "command", verbosity=0)
    by_admin_form = ApiKey(name="admin")  # the admin's add form starts from the model's default
    limits = {by_service.rate_limit_per_minute, ApiKey.objects.get(name="command").rate_limit_per_minute,
              by_admin_form.rate_limit_per_minute}
    assert limits == {6000}
    assert 6000 >= 2 * SIGNUP_FORM_PER_MINUTE


def test_the_default_limit_lets_a_minute_of_signups_through_and_still_stops_a_runaway_key(
    db: None, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(ratelimit, "_now", lambda: 1_800_000_000.5)  # one calendar minute throughout
    key = api_key_create(name="signup-form")[0]
    decisions = [ratelimit.rate_limit_hit(key_id=key.pk, limit=key.rate_limit_per_minute)
                 for _ in range(key.rate_limit_per_minute + 1)]
    assert all(d.allowed for d in decisions[:SIGNUP_FORM_PER_MINUTE])  # 50/s for a whole minute
    assert all(d.allowed for d in decisions[:-1])  # and a peak of twice that
    assert not decisions[-1].allowed
