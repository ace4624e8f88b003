"""The file format: the issue's example is valid, every kind of error is named with its step id,
durations and windows compute, and canonical output is stable."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from automation import definition as d
from automation.tests.conftest import ISSUE_EXAMPLE

KNOWN = {"welcome", "replay"}


def problems(steps: list[Any], **workflow: object) -> list[tuple[str, str]]:
    definition = {"key": "wf", "name": "WF", "trigger": {"type": "manual"}, **workflow, "steps": steps}
    return [(i.step, i.message) for i in d.validate_workflow(definition, known_templates=KNOWN)]


def test_the_issue_example_parses_and_validates_clean() -> None:
    data = d.parse_text(ISSUE_EXAMPLE)
    assert [w["key"] for w in data["workflows"]] == ["webinar-welcome"]
    assert d.validate_file(data, known_templates=set()) == []


def test_json_files_are_read_too() -> None:
    data = d.parse_text('{"workflows": [{"key": "a", "name": "A", "trigger": {"type": "manual"}, '
                        '"steps": [{"id": "x", "type": "exit"}]}]}')
    assert d.validate_file(data, known_templates=set()) == []


def test_every_error_is_reported_at_once_with_its_step_id() -> None:
    found = problems([
        {"id": "hello", "type": "send_email", "template": "nope"},
        {"id": "odd", "type": "teleport"},
        {"id": "pause", "type": "wait", "duration": "2 fortnights"},
        {"id": "pick", "type": "branch", "if": {"score_above": 10}, "then": "hello"},
        {"id": "lost", "type": "exit"},
    ])
    messages = dict(found)
    assert messages["hello"] == "unknown template 'nope'"
    assert messages["odd"].startswith("unknown step type 'teleport'")
    assert "bad duration" in messages["pause"]
    assert ("pick", "missing branch target `else`") in found
    assert ("lost", "unreachable step: no path from the first step leads here") in found


def test_a_cycle_without_a_wait_is_an_error_and_with_a_wait_is_fine() -> None:
    spin = [
        {"id": "a", "type": "adjust_score", "points": 1},
        {"id": "b", "type": "branch", "if": {"score_above": 100}, "then": "end", "else": "a"},
    ]
    found = problems(spin)
    assert any(step == "a" and msg.startswith("cycle without a wait: a -> b -> a") for step, msg in found)
    looped = [spin[0], {"id": "w", "type": "wait", "duration": "1d"},
              {"id": "b", "type": "branch", "if": {"score_above": 100}, "then": "end", "else": "a"}]
    assert problems(looped) == []


def test_targets_must_exist_and_ids_must_be_unique() -> None:
    found = problems([
        {"id": "a", "type": "send_email", "template": "welcome", "next": "nowhere"},
        {"id": "a", "type": "exit"},
        {"id": "b", "type": "branch", "if": {"segment": "VIP"}, "then": "ghost", "else": "end"},
    ])
    assert ("a", "next 'nowhere' is not a step of this workflow") in found
    assert ("a", "duplicate step id") in found
    assert ("b", "branch target `then` 'ghost' is not a step of this workflow") in found


def test_workflow_level_errors() -> None:
    found = problems([{"id": "x", "type": "exit"}], reentry={"after": "soon"}, trigger={"type": "event"},
                     goal={"evnt": "x"}, timezone="Mars/Base")
    text = " | ".join(m for _, m in found)
    assert "reentry: bad duration 'soon'" in text
    assert "an event trigger needs `event: <event type>`" in text
    assert "goal must be {event: <event type>}" in text
    assert "unknown time zone 'Mars/Base'" in text


def test_step_field_checks() -> None:
    listed = problems([
        {"id": "u", "type": "update_contact", "set": {"email": "x@y.z"}},
        {"id": "s", "type": "adjust_score", "points": 0},
        {"id": "n", "type": "notify_sales"},
        {"id": "h", "type": "webhook", "url": "ftp://x"},
        {"id": "w", "type": "wait", "window": {"days": ["funday"], "start": 9, "end": 17}},
        {"id": "c", "type": "branch", "if": {"email": "forwarded"}, "then": "end", "else": "end", "colour": 1},
    ])
    found = dict(listed)
    assert found["u"] == "cannot set 'email': use a contact field or attributes.<key>"
    assert found["s"] == "adjust_score needs non-zero whole `points`"
    assert found["n"].startswith("notify_sales needs email")
    assert found["h"].startswith("bad URL")
    assert found["w"].startswith("window days must be")
    assert ("c", "unknown field(s) for branch: colour") in listed
    assert ("c", "condition: email must be opened or clicked") in listed


@pytest.mark.parametrize(("text", "seconds"), [("30s", 30), ("15m", 900), ("2h", 7200), ("7d", 604800),
                                                ("1w", 604800)])
def test_durations(text: str, seconds: int) -> None:
    assert d.parse_duration(text) == dt.timedelta(seconds=seconds)


def test_a_weekday_hour_window_in_a_time_zone() -> None:
    berlin = d.zone("Europe/Berlin")
    window = {"days": ["mon", "tue", "wed", "thu", "fri"], "start": 9, "end": 17}
    saturday_noon = dt.datetime(2026, 3, 7, 11, 0, tzinfo=dt.UTC)  # 12:00 in Berlin
    assert d.window_next(window, after=saturday_noon, tz=berlin) == dt.datetime(2026, 3, 9, 8, 0, tzinfo=dt.UTC)
    tuesday_ten = dt.datetime(2026, 3, 10, 9, 0, tzinfo=dt.UTC)  # inside: now
    assert d.window_next(window, after=tuesday_ten, tz=berlin) == tuesday_ten
    tuesday_evening = dt.datetime(2026, 3, 10, 18, 0, tzinfo=dt.UTC)
    assert d.window_next(window, after=tuesday_evening, tz=berlin) == dt.datetime(2026, 3, 11, 8, 0, tzinfo=dt.UTC)


def test_canonical_output_is_stable() -> None:
    data = d.parse_text(ISSUE_EXAMPLE)
    once = d.dump_text(data)
    assert d.dump_text(d.parse_text(once)) == once
    as_json = d.dump_text(data, fmt="json")
    assert d.parse_text(as_json) == d.parse_text(once)


def test_unreadable_files_are_one_clear_error() -> None:
    with pytest.raises(d.DefinitionError, match="workflows"):
        d.parse_text("steps: []")
    with pytest.raises(d.DefinitionError, match="not valid YAML"):
        d.parse_text("workflows: [unclosed")
