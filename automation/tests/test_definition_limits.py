"""Workflow files cannot tie up the server (issue 14, items 6 and 9): a YAML alias bomb, deep
nesting or an oversized file is refused before anything is built, through `manage.py workflows
import` and the admin import, and nothing is written; the versions screen's simulation is bounded.
Timing is not asserted: the limits are what keep the refusal under a second."""

from __future__ import annotations

import html
from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import CommandError, call_command
from django.test import Client, override_settings

from automation.definition import DefinitionError, parse_text
from automation.models import Workflow, WorkflowVersion
from automation.tests.conftest import deploy, make_contact, wf_file
from campaigns.models import EmailTemplate

pytestmark = pytest.mark.django_db

LOL = '"lol"'
# A "billion laughs" in a valid workflow file's shape: 314 bytes, ten million strings once expanded.
BOMB = "\n".join([
    "templates:",
    "  - key: t",
    "    subject: s",
    "    html: h",
    "workflows:",
    "  - key: bomb",
    "    name: Bomb",
    "    trigger: {type: event, event: x}",
    "    steps:",
    "      - id: w",
    "        type: webhook",
    "        url: https://example.com/",
    "        payload:",
    f"          a: &a [{', '.join([LOL] * 10)}]",
    *(f"          {c}: &{c} [{', '.join(['*' + p] * 10)}]" for p, c in zip("abcdef", "bcdefg", strict=True)),
    "",
])
RECURSIVE = "workflows: &w [*w]\n"
DEEP_YAML = "workflows:\n  - " + "[" * 200 + "]" * 200 + "\n"
DEEP_JSON = '{"workflows": ' + "[" * 100_000 + "]" * 100_000 + "}"


@pytest.mark.parametrize(("text", "message"), [
    (BOMB, "YAML aliases would expand the file to 12,345,718 values; aliases may add at most 10,000"),
    (RECURSIVE, "a YAML alias refers to a node that contains it"),
    (DEEP_YAML, "YAML nested deeper than 50 levels"),
    (DEEP_JSON, "not valid YAML or JSON: nested too deeply"),
])
def test_bombs_are_refused_while_parsing(text: str, message: str) -> None:
    with pytest.raises(DefinitionError, match=message):
        parse_text(text)


@override_settings(WORKFLOW_FILE_MAX_ALIASES=3)
def test_aliases_beyond_the_limit_are_refused_and_a_few_are_fine() -> None:
    shared = ("  - {key: a, name: A, trigger: &t {type: event, event: x}, "
              "steps: &s [{id: w, type: wait, duration: 1d}]}\n")
    few = "workflows:\n" + shared + "  - {key: b, name: B, trigger: *t, steps: *s}\n"
    assert parse_text(few)["workflows"][1]["steps"] == [{"id": "w", "type": "wait", "duration": "1d"}]
    many = few + "  - {key: c, name: C, trigger: *t, steps: *s}\n"
    with pytest.raises(DefinitionError, match=r"more than 3 YAML aliases \(\*name\) \(WORKFLOW_FILE_MAX_ALIASES\)"):
        parse_text(many)


@override_settings(WORKFLOW_FILE_MAX_BYTES=2048)
def test_a_file_over_the_size_limit_is_refused_naming_the_setting() -> None:
    text = wf_file(steps=[{"id": "w", "type": "wait", "duration": "1d"}]) + "# " + "x" * 3000 + "\n"
    with pytest.raises(DefinitionError, match=r"at most 2,048 \(WORKFLOW_FILE_MAX_BYTES\)"):
        parse_text(text)


def test_the_import_command_refuses_the_bomb_and_writes_nothing(tmp_path: Path, role_users) -> None:  # noqa: ANN001
    path = tmp_path / "bomb.yaml"
    path.write_text(BOMB, encoding="utf-8")
    with pytest.raises(CommandError, match="YAML aliases would expand the file"):
        call_command("workflows", "import", str(path))
    assert not Workflow.objects.exists()
    assert not WorkflowVersion.objects.exists()
    assert not EmailTemplate.objects.exists()


def test_the_admin_import_refuses_the_bomb_and_writes_nothing(client: Client, role_users) -> None:  # noqa: ANN001
    client.force_login(role_users["marketer"])
    for data in ({"text": BOMB}, {"file": SimpleUploadedFile("bomb.yaml", BOMB.encode())}):
        page = client.post("/admin/automation/workflow/import/", data)
        assert page.status_code == 200
        assert "YAML aliases would expand the file" in html.unescape(page.content.decode())
    assert not Workflow.objects.exists()
    assert not EmailTemplate.objects.exists()


@override_settings(WORKFLOW_FILE_MAX_BYTES=2048)
def test_the_admin_import_refuses_an_oversized_or_undecodable_upload(client: Client, role_users) -> None:  # noqa: ANN001
    client.force_login(role_users["marketer"])
    big = SimpleUploadedFile("big.yaml", b"workflows: []\n" + b"#" * 5000)
    page = html.unescape(client.post("/admin/automation/workflow/import/", {"file": big}).content.decode())
    assert "at most 2,048 (WORKFLOW_FILE_MAX_BYTES)" in page
    latin1 = SimpleUploadedFile("latin1.yaml", "workflows: [] # café".encode("latin-1"))
    page = html.unescape(client.post("/admin/automation/workflow/import/", {"file": latin1}).content.decode())
    assert "The file is not UTF-8 text" in page


@pytest.mark.parametrize(("random", "message"), [
    ("-5", "a number of random contacts from 0"),
    ("100000", "at most 50 random contacts"),
    ("many", "a whole number of random contacts"),
])
def test_the_simulation_refuses_a_bad_sample_size(client: Client, role_users, random: str, message: str) -> None:  # noqa: ANN001
    workflow = deploy(wf_file(steps=[{"id": "w", "type": "wait", "duration": "1d"}]))
    make_contact("a@example.com")
    client.force_login(role_users["marketer"])
    version = workflow.versions.get()
    page = client.get(f"/admin/automation/workflow/{workflow.pk}/versions/", {"simulate": str(version.pk),
                                                                              "random": random}, follow=True)
    assert page.status_code == 200
    assert page.context["simulations"] == []
    assert f"Simulation not run: random: {message}" in html.unescape(page.content.decode())


def test_the_simulation_runs_a_sample_within_the_bound(client: Client, role_users) -> None:  # noqa: ANN001
    workflow = deploy(wf_file(steps=[{"id": "w", "type": "wait", "duration": "1d"}]))
    for n in range(3):
        make_contact(f"c{n}@example.com")
    client.force_login(role_users["marketer"])
    page = client.get(f"/admin/automation/workflow/{workflow.pk}/versions/",
                      {"simulate": str(workflow.versions.get().pk), "random": "50"})
    assert len(page.context["simulations"]) == 3
