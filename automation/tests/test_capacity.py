"""Issue 24: the dependency map, the warnings before deleting or pausing what production needs,
and the capacity check at promotion (estimate, limits, acknowledgement, `workflows check`)."""

from __future__ import annotations

import datetime as dt
import io
import json
import re
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import pytest
import yaml
from django.core.management import CommandError, call_command
from django.test import Client
from django.utils import timezone
from django.utils.html import escape

from automation.capacity import capacity_check, path_max
from automation.crm.models import CrmConnection
from automation.dependencies import (
    system_dependencies,
    version_dependencies,
    version_dependencies_json,
    version_graph_svg,
)
from automation.models import Workflow, WorkflowVersion
from automation.services import CapacityNotAcknowledged, workflow_import, workflow_promote
from automation.tests.conftest import deploy, wf_file
from campaigns.models import EmailTemplate, SenderProfile
from consent.models import Topic
from contacts.models import Contact, Event, Segment, SegmentMembership
from core.models import AuditEntry

pytestmark = pytest.mark.django_db

WEBINAR_STEPS: list[dict[str, Any]] = [
    {"id": "welcome", "type": "send_email", "template": "webinar-welcome"},
    {"id": "sync", "type": "crm_sync"},
    {"id": "ping", "type": "webhook", "url": "https://hooks.example.com/webinar"},
    {"id": "wait", "type": "wait", "duration": "1d"},
    {"id": "attended", "type": "branch", "if": {"segment": "Customers"}, "then": "thanks", "else": "replay"},
    {"id": "thanks", "type": "send_email", "template": "webinar-thanks", "next": "end"},
    {"id": "replay", "type": "send_email", "template": "webinar-replay"},
]
WEBINAR_TRIGGER = {"type": "event", "event": "webinar_registered"}


def webinar_file(key: str = "webinar", steps: list[dict[str, Any]] = WEBINAR_STEPS) -> str:
    return wf_file(key, steps=steps, trigger=WEBINAR_TRIGGER,
                   templates=["webinar-welcome", "webinar-thanks", "webinar-replay"])


@pytest.fixture
def limits(db: None) -> dict[str, Any]:
    """The docs' worked example (docs/workflows.md, "Capacity check"): a sender at 50/s with a
    burst of 10 on day 1 of a 500-a-day warm-up, a HubSpot connection at 100/10s in batches of
    100, a customers segment, 600 registrations in the last hour and 100 the day before."""
    sender = SenderProfile.objects.create(
        name="Webinars", from_email="webinars@leadflow.test", rate="50/s", burst=10, is_default=True,
        warmup_started_on=timezone.now().date(), warmup_schedule=[500, 1000, 2000], frequency_cap=3,
        frequency_days=7, postal_address="1 Example Street")
    crm = CrmConnection.objects.create(name="HubSpot", kind="hubspot", base_url="https://api.hubapi.com",
                                       rate_limit="100/10s", batch_size=100)
    segment = Segment.objects.create(name="Customers", definition={"tag": "customer"})
    now = timezone.now()
    contacts = Contact.objects.bulk_create([Contact(email=f"r{i}@example.com") for i in range(700)])
    Event.objects.bulk_create(
        [Event(contact=c, event_type="webinar_registered", occurred_at=now - dt.timedelta(minutes=5),
               source="api:test") for c in contacts[:600]]
        + [Event(contact=c, event_type="webinar_registered", occurred_at=now - dt.timedelta(hours=30),
                 source="api:test") for c in contacts[600:]])
    return {"sender": sender, "crm": crm, "segment": segment}


def staged(text: str) -> WorkflowVersion:
    return workflow_import(text=text, actor="test", to="staging").versions[0]


def by_limit(report: Any) -> dict[tuple[str, str], Any]:
    return {(r.kind, lim.name): lim for r in report.resources for lim in r.limits}


# --- The estimate -----------------------------------------------------------------------------------------


def test_estimate_matches_the_hand_computed_worked_example(limits) -> None:
    version = staged(webinar_file())
    report = capacity_check(version=version)

    # entrants: the busiest hour (600) and day (600) of webinar_registered in the last 7 days
    assert (report.entrants.basis, report.entrants.per_hour, report.entrants.per_day) == ("events", 600, 600)
    sender, crm, hook = report.resources
    # emails: welcome + one of thanks/replay = 2 per entrant: 1,200 an hour and a day
    assert (sender.label, sender.per_hour, sender.per_day, sender.steps) == ("Webinars", 1200, 1200,
                                                                             ["welcome", "thanks"])
    # 50/s = 180,000/h: within the rate; the burst of 10 goes at once, the other 1,190 at 20 ms each
    assert sender.delay_seconds == pytest.approx(23.8)
    assert sender.summary == "emails from welcome, thanks will take up to 24 seconds at 50/s"
    limits_ = by_limit(report)
    assert limits_["sender", "rate"].status == "ok"
    assert limits_["sender", "burst"].status == "delay"
    assert limits_["sender", "burst"].note == "1,190 wait for the rate"
    # day 1 of the warm-up: 500 today, none sent yet; 1,200 is 700 over
    cap = limits_["sender", "warm-up cap today"]
    assert (cap.status, cap.limit, cap.estimate, cap.note) == (
        "over", "500 today (0 sent, 500 left)", "1,200/day", "700 wait for the next days' caps")
    assert (limits_["sender", "frequency cap"].status, limits_["sender", "frequency cap"].estimate) == (
        "ok", "2 marketing per contact")
    assert limits_["sender", "quiet hours"].status == "ok"
    # CRM: 600 contacts an hour against 36,000 requests an hour; a burst is 6 batches of 100,
    # the last 5 of them 0.1 s apart
    assert (crm.label, crm.per_hour, crm.delay_seconds) == ("HubSpot", 600, pytest.approx(0.5))
    assert (limits_["crm_connection", "rate limit"].status, limits_["crm_connection", "rate limit"].estimate) == (
        "ok", "6-600 requests/h")
    # limits Leadflow cannot read are unknown, never fine
    assert limits_["crm_connection", "daily API limit"].status == "unknown"
    assert (hook.label, hook.per_hour, limits_["webhook_host", "rate limit"].status) == (
        "hooks.example.com", 600, "unknown")
    assert report.over == ["Webinars: warm-up cap today"]


def test_the_docs_worked_example_states_the_numbers_the_test_computes(limits) -> None:
    docs = Path(__file__).resolve().parents[2].joinpath("docs", "workflows.md").read_text(encoding="utf-8")
    section = docs[docs.index("## Capacity check"):]
    example = yaml.safe_load(re.search(r"```yaml\n(.*?)```", section, re.S)[1])  # type: ignore[index]
    assert example["workflows"][0]["steps"] == WEBINAR_STEPS
    report = capacity_check(version=staged(yaml.safe_dump(example, sort_keys=False)))
    sender = report.resources[0]
    for figure in ("600 per hour", "1,200", "23.8 s", sender.summary, "500 today (0 sent, 500 left)",
                   "700 wait", "6 batches", "0.5 s"):
        assert figure in section, figure


def test_no_history_estimates_from_the_audience_and_says_so(limits) -> None:
    version = staged(wf_file("fresh", steps=WEBINAR_STEPS[:1], trigger={"type": "event", "event": "never_seen"},
                             templates=["webinar-welcome"]))
    report = capacity_check(version=version)
    assert (report.entrants.basis, report.entrants.per_hour) == ("audience", 700)
    assert report.entrants.assumptions == [
        "no 'never_seen' events in the last 7 days: the whole audience (700 contacts) is assumed to enter in one hour"]


def test_segment_trigger_uses_the_segment_size(limits) -> None:
    SegmentMembership.objects.bulk_create([SegmentMembership(segment=limits["segment"], contact=c)
                                           for c in Contact.objects.all()[:40]])
    version = staged(wf_file("seg", steps=WEBINAR_STEPS[:1], templates=["webinar-welcome"],
                             trigger={"type": "segment_entered", "segment": "Customers"}))
    report = capacity_check(version=version)
    assert (report.entrants.basis, report.entrants.per_hour, report.resources[0].per_hour) == ("segment", 40, 40)


def test_a_rate_that_cannot_be_read_is_unknown_not_fine(limits) -> None:
    CrmConnection.objects.filter(pk=limits["crm"].pk).update(rate_limit="")
    SenderProfile.objects.filter(pk=limits["sender"].pk).update(rate="fast")
    report = capacity_check(version=staged(webinar_file()))
    limits_ = by_limit(report)
    assert limits_["crm_connection", "rate limit"].status == "unknown"
    assert limits_["sender", "rate"].status == "unknown"


def test_the_heaviest_path_counts_each_branch_side_and_stops_at_loops() -> None:
    steps = [{"id": "a", "type": "send_email"}, {"id": "b", "type": "branch", "then": "c", "else": "d"},
             {"id": "c", "type": "send_email"}, {"id": "e", "type": "send_email", "next": "a"},
             {"id": "d", "type": "wait"}]

    def weight(s: dict[str, Any]) -> int:
        return int(s["type"] == "send_email")

    assert path_max(steps, weight) == (3, ["a", "c", "e"])


# --- Acknowledgement -------------------------------------------------------------------------------------


def test_promoting_past_a_limit_needs_an_acknowledgement_which_is_audited(limits, role_users) -> None:
    version = staged(webinar_file())
    with pytest.raises(CapacityNotAcknowledged, match="warm-up cap today"):
        workflow_promote(workflow=version.workflow, actor=role_users["approver"])
    version.refresh_from_db()
    assert version.state == "staging"

    workflow_promote(workflow=version.workflow, actor=role_users["approver"], acknowledge_capacity=True)
    version.refresh_from_db()
    assert version.state == "production"
    entry = AuditEntry.objects.get(action="workflow.capacity_acknowledged")
    assert (entry.actor, entry.target_id) == (role_users["approver"], str(version.pk))
    assert entry.data["over"] == ["Webinars: warm-up cap today"]
    assert entry.data["capacity"]["resources"][0]["per_day"] == 1200


def test_within_limits_no_acknowledgement_is_needed(limits) -> None:
    SenderProfile.objects.filter(pk=limits["sender"].pk).update(warmup_schedule=[], warmup_started_on=None)
    version = staged(webinar_file())
    workflow_promote(workflow=version.workflow, actor="test")
    assert not AuditEntry.objects.filter(action="workflow.capacity_acknowledged").exists()


def test_admin_promote_dialog_shows_the_estimate_and_requires_the_approvers_acknowledgement(
        limits, role_users) -> None:
    workflow = staged(webinar_file()).workflow
    act = f"/admin/automation/workflow/{workflow.pk}/act/"
    approver = Client()
    approver.force_login(role_users["approver"])
    dialog = approver.post(act, {"action": "promote", "migrate": "0"})
    html = dialog.content.decode()
    assert 'data-limit="warm-up cap today"' in html
    assert "500 today (0 sent, 500 left)" in html
    assert "emails from welcome, thanks will take up to 24 seconds at 50/s" in html
    assert 'name="acknowledge_capacity"' in html

    refused = approver.post(act, {"action": "promote", "migrate": "0", "confirm": "1"}, follow=True)
    assert "explicit acknowledgement" in refused.content.decode()
    assert workflow.versions.get().state == "staging"

    marketer = Client()
    marketer.force_login(role_users["marketer"])
    denied = marketer.post(act, {"action": "promote", "migrate": "0", "confirm": "1", "acknowledge_capacity": "1"},
                           follow=True)
    assert "promote_workflow" in denied.content.decode()
    assert not AuditEntry.objects.filter(action="workflow.capacity_acknowledged").exists()

    approver.post(act, {"action": "promote", "migrate": "0", "confirm": "1", "acknowledge_capacity": "1"})
    assert workflow.versions.get().state == "production"
    assert AuditEntry.objects.get(action="workflow.capacity_acknowledged").actor == role_users["approver"]


# --- manage.py workflows check / dependencies --------------------------------------------------------------


def test_workflows_check_prints_the_same_json_and_fails_when_over(limits) -> None:
    version = staged(webinar_file())
    out = io.StringIO()
    with pytest.raises(CommandError, match="over: Webinars: warm-up cap today") as failed:
        call_command("workflows", "check", "webinar", stdout=out)
    assert failed.value.returncode == 1
    printed = json.loads(out.getvalue())
    assert printed == json.loads(json.dumps(capacity_check(version=version).as_dict()))
    assert printed["needs_acknowledgement"] is True
    assert printed["resources"][0]["limits"][2]["name"] == "warm-up cap today"

    SenderProfile.objects.filter(pk=limits["sender"].pk).update(warmup_schedule=[], warmup_started_on=None)
    out = io.StringIO()
    call_command("workflows", "check", "webinar", stdout=out)  # exit status 0
    assert json.loads(out.getvalue())["over"] == []


def test_cli_promote_needs_acknowledge_capacity_when_over(limits) -> None:
    version = staged(webinar_file())
    with pytest.raises(CommandError, match="explicit acknowledgement"):
        call_command("workflows", "promote", "webinar")
    call_command("workflows", "promote", "webinar", "--acknowledge-capacity", stdout=io.StringIO())
    version.refresh_from_db()
    assert version.state == "production"
    assert AuditEntry.objects.get(action="workflow.capacity_acknowledged").actor_label == "cli"


def test_workflows_dependencies_prints_the_map(live) -> None:
    out = io.StringIO()
    call_command("workflows", "dependencies", "webinar", stdout=out)
    version = WorkflowVersion.objects.get(workflow__key="webinar")
    assert json.loads(out.getvalue()) == version_dependencies_json(version=version)
    out = io.StringIO()
    call_command("workflows", "dependencies", stdout=out)
    assert json.loads(out.getvalue()) == system_dependencies()


def test_quiet_hours_delay_and_a_frequency_cap_over(limits) -> None:
    SenderProfile.objects.filter(pk=limits["sender"].pk).update(
        quiet_hours_start=dt.time(21, 0), quiet_hours_end=dt.time(8, 0), time_zone="Europe/Berlin", frequency_cap=1)
    limits_ = by_limit(capacity_check(version=staged(webinar_file())))
    quiet = limits_["sender", "quiet hours"]
    assert (quiet.status, quiet.limit, quiet.note) == (
        "delay", "21:00-08:00 Europe/Berlin", "marketing emails triggered in quiet hours wait until 08:00: up to "
                                             "11.0 hours")
    cap = limits_["sender", "frequency cap"]
    assert (cap.status, cap.limit, cap.estimate) == ("over", "1 per contact in 7 days", "2 marketing per contact")


def test_domain_limits_are_unknown_not_fine(limits) -> None:
    SenderProfile.objects.filter(pk=limits["sender"].pk).update(domain_limits={"gmail.com": "20/s"})
    domains = by_limit(capacity_check(version=staged(webinar_file())))["sender", "domain limits"]
    assert (domains.status, domains.limit) == ("unknown", "gmail.com 20/s")


def test_a_paused_sender_is_over(limits) -> None:
    SenderProfile.objects.filter(pk=limits["sender"].pk).update(is_paused=True)
    report = capacity_check(version=staged(webinar_file()))
    assert "Webinars: paused" in report.over


def test_workflows_check_names_an_unknown_workflow() -> None:
    with pytest.raises(CommandError, match="no workflow 'nope'"):
        call_command("workflows", "check", "nope")


# --- The dependency map ---------------------------------------------------------------------------------------


def test_the_map_lists_each_kind_of_dependency_and_who_shares_it(limits) -> None:
    Workflow.objects.create(key="placeholder", name="x")  # unrelated rows do not show
    SenderProfile.objects.filter(pk=limits["sender"].pk).update(warmup_schedule=[], warmup_started_on=None)
    webinar = deploy(webinar_file())
    webinar.test_segment = limits["segment"]
    webinar.save()
    deploy(wf_file("upsell", steps=[{"id": "offer", "type": "send_email", "template": "webinar-thanks"},
                                    {"id": "tell", "type": "notify_sales", "webhook": "https://hooks.example.com/x"}]))
    version = webinar.versions.get(state="production")
    # the welcome email goes under a subscription topic (the revision production pins names it); the
    # others name none (their kind stands in)
    pin_topic(version, "webinar-welcome", Topic.objects.create(key="webinars", name="Webinar news"))
    deps = {(x.ref.kind, x.ref.label): x for x in version_dependencies(version=version)}
    assert set(deps) == {
        ("template", "webinar-welcome"), ("template", "webinar-thanks"), ("template", "webinar-replay"),
        ("segment", "Customers"), ("sender", "Webinars"), ("topic", "Webinar news"), ("topic", "marketing"),
        ("crm_connection", "HubSpot"), ("webhook_host", "hooks.example.com")}
    assert (deps["topic", "Webinar news"].steps, deps["topic", "marketing"].steps) == (["welcome"],
                                                                                       ["thanks", "replay"])
    assert deps["segment", "Customers"].steps == ["test audience", "attended"]
    assert deps["template", "webinar-thanks"].detail == "pins r1"
    assert deps["template", "webinar-thanks"].shared_with == ["upsell v1 (production)"]
    assert deps["webhook_host", "hooks.example.com"].shared_with == ["upsell v1 (production)"]
    assert deps["template", "webinar-welcome"].shared_with == []
    assert deps["crm_connection", "HubSpot"].steps == ["sync"]

    # the graph is well-formed SVG: the version, its 9 dependencies and the one workflow sharing some
    svg = ElementTree.fromstring(version_graph_svg(version=version, deps=list(deps.values())))  # noqa: S314  ours
    nodes = [g.get("data-node") for g in svg.iter("{http://www.w3.org/2000/svg}g")]
    assert len(nodes) == 11
    assert "o:upsell v1 (production)" in nodes
    # version -> each dependency, and upsell's 4 shared ones (template, sender, topic, webhook host) -> upsell
    assert len(list(svg.iter("{http://www.w3.org/2000/svg}line"))) == 9 + 4

    exported = version_dependencies_json(version=version)
    assert {d["kind"] for d in exported["dependencies"]} == {"template", "segment", "sender", "topic",
                                                             "crm_connection", "webhook_host"}
    system = system_dependencies()
    node = next(n for n in system["dependencies"] if n["id"] == "template:webinar-thanks")
    assert node["used_by"] == ["upsell v1 (production)", "webinar v1 (production)"]


def test_the_versioning_screen_draws_the_map_and_the_system_page_exports_json(limits, role_users) -> None:
    SenderProfile.objects.filter(pk=limits["sender"].pk).update(warmup_schedule=[], warmup_started_on=None)
    webinar = deploy(webinar_file())
    version = webinar.versions.get()
    ops = Client()
    ops.force_login(role_users["ops"])
    html = ops.get(f"/admin/automation/workflow/{webinar.pk}/versions/").content.decode()
    assert 'aria-label="dependencies of webinar v1"' in html
    assert 'data-node="crm_connection:' in html
    assert "webhook host: hooks.example.com" in html
    exported = ops.get(f"/admin/automation/workflow/{webinar.pk}/dependencies/", {"version": version.pk}).json()
    assert exported["workflow"] == "webinar"
    assert len(exported["dependencies"]) == 8
    page = ops.get("/admin/automation/workflow/dependencies/")
    assert 'aria-label="dependencies of every staging and production version"' in page.content.decode()
    assert ops.get("/admin/automation/workflow/dependencies/", {"format": "json"}).json() == system_dependencies()


# --- Warnings before deleting or pausing what production needs ------------------------------------------------


def post_data(form: Any) -> dict[str, Any]:
    """What the admin change form would post unchanged."""
    data: dict[str, Any] = {}
    for name in form.fields:
        value = form[name].value()
        if isinstance(value, bool):
            if value:
                data[name] = "on"
        elif value is not None:
            data[name] = value
    return data


@pytest.fixture
def live(limits: dict[str, Any]) -> dict[str, Any]:
    SenderProfile.objects.filter(pk=limits["sender"].pk).update(warmup_schedule=[], warmup_started_on=None)
    deploy(webinar_file())
    return limits


WARNING = "Production workflow versions depend on {}: webinar v1 (production)."


@pytest.mark.parametrize("what", ["template", "sender", "segment", "crm"])
def test_deleting_what_production_needs_warns_and_names_the_versions(live, role_users, what) -> None:
    obj = {"template": EmailTemplate.objects.get(key="webinar-welcome"), "sender": live["sender"],
           "segment": live["segment"], "crm": live["crm"]}[what]
    label = {"template": "template 'webinar-welcome'", "sender": "sender 'Webinars'",
             "segment": "segment 'Customers'", "crm": "CRM connection 'HubSpot'"}[what]
    admin = Client()
    admin.force_login(role_users["admin"])
    url = f"/admin/{obj._meta.app_label}/{obj._meta.model_name}/{obj.pk}/delete/"
    assert escape(WARNING.format(label)) in admin.get(url).content.decode()
    # the bulk action's confirmation page too
    listing = f"/admin/{obj._meta.app_label}/{obj._meta.model_name}/"
    bulk = admin.post(listing, {"action": "delete_selected", "_selected_action": [obj.pk]})
    assert escape(WARNING.format(label)) in bulk.content.decode()


def test_nothing_depends_no_warning(live, role_users) -> None:
    unused = EmailTemplate.objects.create(key="unused", subject="s", html="<p>x</p>")
    admin = Client()
    admin.force_login(role_users["admin"])
    assert "Production workflow versions depend" not in admin.get(
        f"/admin/campaigns/emailtemplate/{unused.pk}/delete/").content.decode()


@pytest.mark.parametrize("what", ["sender", "segment", "crm"])
def test_pausing_what_production_needs_warns_and_names_the_versions(live, role_users, what) -> None:
    obj = live[what]
    admin = Client()
    admin.force_login(role_users["admin"])
    url = f"/admin/{obj._meta.app_label}/{obj._meta.model_name}/{obj.pk}/change/"
    form = admin.get(url).context["adminform"].form
    data = post_data(form)
    if what == "sender":
        data["is_paused"] = "on"
    else:
        data.pop("is_active", None)
    if what == "segment":
        data["definition"] = json.dumps(obj.definition)
    response = admin.post(url, data, follow=True)
    assert response.status_code == 200
    obj.refresh_from_db()
    assert (obj.is_paused if what == "sender" else not obj.is_active), response.context["adminform"].form.errors
    label = {"sender": "sender 'Webinars'", "segment": "segment 'Customers'", "crm": "CRM connection 'HubSpot'"}[what]
    assert escape(f"{WARNING.format(label)} It is now paused") in response.content.decode()


def pin_topic(version: WorkflowVersion, key: str, topic: Topic) -> None:
    """As if the revision the version pins had been saved with this topic (revisions are immutable)."""
    from automation.engine import pinned_revision
    from campaigns.models import EmailTemplateRevision

    EmailTemplateRevision.objects.filter(pk=pinned_revision(version.pk, key).pk).update(topic=topic)


def test_a_topic_production_sends_under_is_the_pinned_revisions_and_deleting_it_warns(limits, role_users) -> None:
    from campaigns.revisions import template_save

    SenderProfile.objects.filter(pk=limits["sender"].pk).update(warmup_schedule=[], warmup_started_on=None)
    news = Topic.objects.create(key="news", name="News")
    other = Topic.objects.create(key="other", name="Other")
    webinar = deploy(webinar_file())
    version = webinar.versions.get()
    pin_topic(version, "webinar-welcome", news)
    # A new topic on the working copy is not what production sends under until it is promoted.
    template = EmailTemplate.objects.get(key="webinar-welcome")
    template.topic = other
    template_save(template=template, actor=None, source="test")
    ops = Client()
    ops.force_login(role_users["ops"])
    exported = ops.get(f"/admin/automation/workflow/{webinar.pk}/dependencies/", {"version": version.pk}).json()
    topics = {dep["ref"] for dep in exported["dependencies"] if dep["kind"] == "topic"}
    assert str(news.pk) in topics
    assert str(other.pk) not in topics
    admin = Client()
    admin.force_login(role_users["admin"])
    page = admin.get(f"/admin/consent/topic/{news.pk}/delete/").content.decode()
    assert escape(WARNING.format("topic 'News'")) in page
    assert "Production workflow versions depend" not in admin.get(
        f"/admin/consent/topic/{other.pk}/delete/").content.decode()
