"""The shared GCRA limiter against a real (embedded) Redis."""

import time

import pytest

from core.throttle import Rate, Throttle, parse_rate


@pytest.mark.parametrize(
    ("text", "count", "period"),
    [("50/s", 50, 1), ("10000/h", 10000, 3600), ("100/10s", 100, 10), (" 2 / m ", 2, 60)],
)
def test_parse_rate_reads_count_and_period(text, count, period):
    rate = parse_rate(text)
    assert (rate.count, rate.period) == (count, period)


@pytest.mark.parametrize("text", ["", "50", "fast", "0/s", "10/w", "-1/s"])
def test_parse_rate_rejects_nonsense_with_a_clear_message(text):
    with pytest.raises(ValueError, match="rate"):
        parse_rate(text)


def test_burst_is_granted_at_once_then_tokens_wait():
    throttle = Throttle("test:burst", Rate(count=10, period=1, burst=5))
    throttle.reset()
    first = throttle.take(20)
    assert first.granted == 5  # the burst, no more
    second = throttle.take(1)
    assert second.granted == 0
    assert 0 < second.wait <= 0.1 + 0.01  # one interval at 10/s


def test_two_throttles_with_the_same_name_share_one_budget():
    a = Throttle("test:shared", Rate(count=1, period=60, burst=3))
    b = Throttle("test:shared", Rate(count=1, period=60, burst=3))
    a.reset()
    assert a.take(2).granted == 2
    assert b.take(5).granted == 1  # what a left over
    assert a.take(1).granted == 0


def test_acquire_gives_up_when_the_budget_will_not_free_in_time():
    throttle = Throttle("test:giveup", Rate(count=1, period=3600, burst=1))
    throttle.reset()
    assert throttle.acquire(1, max_wait=0.1) == 1
    started = time.monotonic()
    assert throttle.acquire(1, max_wait=0.1) == 0
    assert time.monotonic() - started < 0.5  # it did not sleep for the hour


def test_tokens_accrue_at_the_configured_rate():
    throttle = Throttle("test:accrue", Rate(count=20, period=1, burst=1))
    throttle.reset()
    granted = 0
    start = time.monotonic()
    last_call = start
    while time.monotonic() - start < 0.5:
        last_call = time.monotonic()
        granted += throttle.acquire(50, max_wait=1)
    ended = time.monotonic()
    # Bounds from the time that really passed, so a loaded machine that stalls the loop cannot
    # fail it: by the last call at least 20/s of that time had accrued (plus the first token);
    # by its return at most 20/s of the whole time (plus the first, plus one for clock skew
    # between this process and Redis's TIME). A wrong rate or a lost/double grant breaks them.
    assert int(20 * (last_call - start)) - 1 <= granted <= 20 * (ended - start) + 2
