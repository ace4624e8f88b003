"""The docs say what the code does (issue 18 item 6): each statement corrected there is read from the
doc and checked against the code or its behaviour, so the next change to either shows up here."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.management import call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext

ROOT = Path(__file__).resolve().parents[1]


def doc(name: str) -> str:
    return (ROOT / "docs" / name).read_text(encoding="utf-8")


def between(text: str, start: str, end: str) -> str:
    begin = text.index(start)
    return text[begin:text.index(end, begin + len(start))]


def table_rows(text: str) -> list[list[str]]:
    """The body rows of the first Markdown table in `text`, cells stripped."""
    lines = [line.strip() for line in text.splitlines() if line.strip().startswith("|")]
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in lines[2:]]


def code_spans(text: str) -> list[str]:
    return [" ".join(span.split()) for span in re.findall(r"`([^`]+)`", text)]


# --- docs/segments.md: the statements of a full refresh ------------------------------------------------


def statement_pattern(shape: str) -> re.Pattern[str]:
    """`INSERT ... SELECT ... ON CONFLICT` -> a regex finding those words in that order."""
    parts = [r"\s+".join(map(re.escape, part.split())) for part in shape.split("...") if part.strip()]
    return re.compile(".*".join(parts), re.IGNORECASE | re.DOTALL)


@pytest.mark.django_db
def test_segments_doc_names_the_statements_a_full_refresh_runs() -> None:
    from contacts.models import Contact, Segment, SegmentMembership
    from contacts.segments.services import segment_refresh

    bullet = between(doc("segments.md"), "- **Full refresh**", "- **Incremental**")
    shapes = [span for span in code_spans(bullet) if span.split()[0] in ("INSERT", "DELETE")]
    assert len(shapes) >= 2, shapes
    # given a segment with one member leaving and one entering
    segment = Segment.objects.create(name="French", definition={"field": "country", "op": "eq", "value": "FR"})
    leaving = Contact.objects.create(email="leaving@example.com", country="FR")
    entering = Contact.objects.create(email="entering@example.com", country="DE")
    segment_refresh(segment=segment)
    Contact.objects.filter(pk=leaving.pk).update(country="DE")
    Contact.objects.filter(pk=entering.pk).update(country="FR")
    # when it is refreshed
    with CaptureQueriesContext(connection) as queries:
        assert segment_refresh(segment=segment) == (1, 1)
    # then every statement shape the doc names is one the refresh ran
    membership = SegmentMembership._meta.db_table
    ran = [q["sql"] for q in queries.captured_queries if q["sql"].split()[0].upper() in ("INSERT", "DELETE")]
    for shape in shapes:
        assert any(statement_pattern(shape).search(sql) for sql in ran), f"the refresh runs no `{shape}`: {ran}"
    # and each statement that changes membership is one the doc names
    for sql in ran:
        if re.match(rf"(INSERT INTO|DELETE FROM) \"?{membership}\b", sql):
            assert any(statement_pattern(shape).search(sql) for shape in shapes), f"undocumented: {sql}"


# --- docs/scoring.md: the ledger's unique constraint -------------------------------------------------------


def test_scoring_doc_names_the_ledgers_unique_constraint_with_its_fields() -> None:
    from django.db.models import UniqueConstraint

    from scoring.models import ScoreEntry

    actual = {c.name: tuple(c.fields) for c in ScoreEntry._meta.constraints if isinstance(c, UniqueConstraint)}
    text = doc("scoring.md")
    unnamed = [tuple(f.strip() for f in m.group(1).split(",")) for m in re.finditer(r"unique `\(([^)`]*)\)`", text)]
    named = {m.group(1): tuple(f.strip() for f in m.group(2).split(","))
             for m in re.finditer(r"`(scoreentry_\w+)` \(([^)]*)\)", text)}
    assert unnamed, "scoring.md no longer names the ledger's unique constraint"
    for fields in unnamed:
        assert fields in actual.values(), f"scoring.md says unique {fields}; ScoreEntry has {actual}"
    for name, fields in named.items():
        assert actual.get(name) == fields, f"scoring.md says {name} is {fields}; ScoreEntry has {actual}"


# --- docs/operations.md: what to set behind a TLS proxy; when the sweepers act ----------------------------


def settings_read_from_environment() -> set[str]:
    """Every variable config/settings.py reads (env_*("NAME", ...) and friends)."""
    source = (ROOT / "config" / "settings.py").read_text()
    return set(re.findall(r"""\benv\w*\(\s*["']([A-Z][A-Z0-9_]*)["']""", source))


def test_every_variable_operations_md_tells_you_to_set_is_read_by_the_settings() -> None:
    text = doc("operations.md")
    told = set(re.findall(r"\bset `([A-Z][A-Z0-9_]*)", text, re.IGNORECASE))
    told |= {name for line in re.findall(r"^export (.*)$", text, re.MULTILINE)
             for name in re.findall(r"(?:^|\s)([A-Z][A-Z0-9_]*)=", line)}
    assert "BEHIND_TLS_PROXY" in told
    assert told - settings_read_from_environment() == set()


def django_settings(env: dict[str, str], *names: str) -> list[str]:
    """The given settings as a fresh process sees them with `env` (settings are read at start-up)."""
    code = ("import django; django.setup(); from django.conf import settings; "
            f"print('\\n'.join(repr(getattr(settings, n, None)) for n in {list(names)!r}))")
    base = {k: v for k, v in os.environ.items() if not k.startswith(("BEHIND_", "SECURE_", "TRUSTED_"))}
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True,  # noqa: S603
                            env={**base, "DJANGO_SETTINGS_MODULE": "config.settings", "DEBUG": "true",
                                 "ENV_FILE": "", **env}, timeout=120)
    return result.stdout.strip().splitlines()[-len(names):]


def test_behind_tls_proxy_is_what_makes_django_trust_the_proxys_header() -> None:
    names = ("SECURE_PROXY_SSL_HEADER", "TRUSTED_PROXY_COUNT")
    assert django_settings({"BEHIND_TLS_PROXY": "true"}, *names) == ["('HTTP_X_FORWARDED_PROTO', 'https')", "1"]
    # what the doc used to say to set is not a variable Leadflow reads
    assert django_settings({"SECURE_PROXY_SSL_HEADER": "HTTP_X_FORWARDED_PROTO,https"}, *names) == ["None", "0"]


def schedule() -> dict[str, int]:
    """config/schedules.py: job function name -> interval in seconds."""
    import importlib

    from rq import cron

    from config import schedules

    cron._job_data_registry.clear()
    importlib.reload(schedules)
    return {job["func"].__name__: job["interval"] for job in cron._job_data_registry if job["interval"]}


def seconds(text: str) -> int:
    match = re.search(r"(\d+) (second|minute)s?\b", text)
    assert match, f"no duration in {text!r}"
    return int(match.group(1)) * (60 if match.group(2) == "minute" else 1)


def setting_default(name: str) -> int:
    source = (ROOT / "config" / "settings.py").read_text()
    match = re.search(rf'env_int\("{name}", (\d+)', source)
    assert match, f"config/settings.py reads no integer {name}"
    return int(match.group(1))


def threshold_in_code(names: list[str]) -> int:
    """The value behind the name the doc cites: a setting's default, or a module constant."""
    from automation import engine
    from automation.crm import services as crm
    from contacts import pipeline

    constants = {"SWEEP_AFTER": pipeline.SWEEP_AFTER, "STALE_SENDING": crm.STALE_SENDING, "LEASE": engine.LEASE}
    for name in names:
        if name in constants:
            return int(constants[name].total_seconds())
        if name.isupper():
            return setting_default(name)
    raise AssertionError(f"the doc cites none of the code's names: {names}")


def test_operations_doc_says_when_each_sweeper_runs_and_what_it_waits_for() -> None:
    section = between(doc("operations.md"), "### What the sweepers re-queue, and when", "\n## ")
    rows = table_rows(section)
    intervals = schedule()
    assert {row[1].strip("`") for row in rows} >= {"events_sweeper", "delivery_sweeper", "crm_sweeper",
                                                   "import_sweeper"}
    for work, sweeper, every, once in rows:
        assert intervals[sweeper.strip("`")] == seconds(every), f"{sweeper} runs every {every}?"
        if "next run" in once:
            continue
        cited = [name for name in code_spans(once) if re.fullmatch(r"[A-Z][A-Z_]+", name)]
        assert seconds(once) == threshold_in_code(cited), f"{work}: {once}"


def incident_key_prefixes_in_code() -> set[str]:
    """The key (up to its first ":") of every incident the code can open: the first argument of each
    Firing(...) in the project's modules, a literal, an f-string, a module constant or a key function."""
    import importlib

    prefixes: set[str] = set()
    for path in ROOT.glob("*/**/*.py"):
        relative = path.relative_to(ROOT)
        if relative.parts[0] in (".venv", "tests", "bench") or "tests" in relative.parts:
            continue
        source = path.read_text()
        if "Firing(" not in source:
            continue
        module = ".".join(relative.with_suffix("").parts)
        for node in ast.walk(ast.parse(source)):
            if not (isinstance(node, ast.Call) and getattr(node.func, "id", "") == "Firing" and node.args):
                continue
            key, where = node.args[0], f"{relative}:{node.lineno}"
            if isinstance(key, ast.Constant):
                text = str(key.value)
            elif isinstance(key, ast.JoinedStr) and isinstance(key.values[0], ast.Constant):
                text = str(key.values[0].value)
            elif isinstance(key, ast.JoinedStr) and isinstance(key.values[0], ast.FormattedValue) \
                    and isinstance(key.values[0].value, ast.Name):
                text = getattr(importlib.import_module(module), key.values[0].value.id)
            elif isinstance(key, ast.Call) and isinstance(key.func, ast.Name):
                text = getattr(importlib.import_module(module), key.func.id)(0)
            else:
                raise AssertionError(f"{where}: an incident key the test cannot read")
            prefixes.add(text.split(":")[0])
    return prefixes


def test_operations_doc_explains_every_incident_the_code_can_open() -> None:
    rows = table_rows(between(doc("operations.md"), "## What each alert means", "\nEach incident"))
    documented = {row[0].strip("`").split(":")[0] for row in rows}
    assert documented == incident_key_prefixes_in_code()


# --- docs/event-api.md: every error code -------------------------------------------------------------------


API_MODULES = ["contacts/api/views.py", "contacts/api/openapi.py", "campaigns/api.py", "campaigns/sns.py"]
ERROR_CLASSES = {"ApiError", "SnsRejected"}


def error_codes_in_code(modules: list[str] | None = None, makers: set[str] = ERROR_CLASSES) -> set[tuple[int, str]]:
    """(status, code) of every error made by a call to one of `makers` with literal values in the
    modules (default: the API's; a re-raise that passes another error's status and code on adds
    nothing new)."""
    found: set[tuple[int, str]] = set()
    if modules is None:
        modules = API_MODULES + [str(p.relative_to(ROOT)) for p in (ROOT / "contacts" / "api").glob("*.py")]
    for module in modules:
        for node in ast.walk(ast.parse((ROOT / module).read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", "")) in makers:
                status, code = node.args[0], node.args[1]
                where = f"{module}:{node.lineno}"
                if isinstance(status, ast.Constant) and isinstance(code, ast.Constant):
                    assert isinstance(status.value, int), where
                    assert isinstance(code.value, str), where
                    found.add((status.value, code.value))
                else:  # only a re-raise of another error's status and code
                    assert isinstance(status, ast.Attribute), f"{where}: a status the test cannot read"
                    assert isinstance(code, ast.Attribute), f"{where}: a code the test cannot read"
    return found


def test_event_api_doc_lists_every_error_code_the_api_can_return() -> None:
    rows = table_rows(between(doc("event-api.md"), "| Status | `code` | When |", "\n\n"))
    documented = {(int(status), code.strip("`")) for status, code, _ in rows}
    assert "bad_request" in {code for _, code in documented}
    assert documented == error_codes_in_code()


def test_crm_doc_lists_every_refusal_of_the_inbound_status_webhook() -> None:
    from automation.crm import services as crm
    from automation.crm import views

    section = between(doc("crm.md"), "## Inbound status webhook", "\n## ")
    rows = table_rows(section)
    documented = {(int(status), code.strip("`")) for status, code, _ in rows}
    assert documented == error_codes_in_code(["automation/crm/views.py"], {"_error"})
    when = {code.strip("`"): text for _, code, text in rows}
    assert f"more than {crm.MAX_INBOUND} changes" in when["too_many"]
    assert f"over {views.MAX_BODY // 1024} KiB" in when["too_large"]
    assert f"over {views.INBOUND_RATE.replace('/m', ' calls a minute')}" in when["rate_limited"]


# --- docs/crm.md: imports queue CRM sync, from the admin and from the command line ---------------------------


@pytest.mark.django_db(transaction=True)  # the sync job is enqueued after COMMIT
def test_crm_doc_a_command_line_import_queues_the_crm_sync_of_its_contacts(tmp_path: Path) -> None:
    from automation.crm.models import CrmConnection
    from contacts.models import ImportJob
    from core.queues import get_connection, get_queue

    bullet = between(doc("crm.md"), "- **An import finished**", "\n- **")
    assert "manage.py import_contacts" in bullet
    assert "crm_import_sync" in bullet
    get_connection().flushdb()
    CrmConnection.objects.create(name="crm", kind=CrmConnection.Kind.WEBHOOK, base_url="http://127.0.0.1:9")
    csv = tmp_path / "people.csv"
    csv.write_text("email,first_name\nann@example.com,Ann\nbob@example.com,Bob\n")
    call_command("import_contacts", str(csv), stdout=open(os.devnull, "w"))  # noqa: SIM115
    job = ImportJob.objects.get()
    queued = [(j.func_name, tuple(j.args)) for j in get_queue("crm").get_jobs()]
    assert ("automation.crm.tasks.crm_import_sync", (job.pk,)) in queued
    # and the sync it runs queues the imported contacts (the same job the admin's import queues)
    from automation.crm.tasks import crm_import_sync

    assert crm_import_sync(job.pk) == 2
