"""Every URL the project resolves, requested as every role, against the README's Roles table.

Deny by default: the walk enumerates the resolver recursively (admin and its per-model URLs,
django-rq under both of its prefixes, leads, operations, the API, the public endpoints), and a
pattern this file does not list fails the test, so a route added later cannot slip through
with whatever access its view happens to have.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import django_rq
import pytest
from django.apps import apps
from django.conf import settings
from django.contrib import admin
from django.contrib.auth.models import User
from django.contrib.contenttypes.models import ContentType
from django.http import HttpResponseBase
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver

from automation.models import Workflow
from campaigns.models import EmailTemplate
from contacts.models import Contact, ImportJob

pytestmark = pytest.mark.django_db

ANON = "anonymous"
MARKETER, APPROVER, SALES, OPS, ADMIN, OUTSIDER = "marketer", "approver", "sales", "ops", "admin", "outsider"
ROLES = (ANON, MARKETER, APPROVER, SALES, OPS, ADMIN, OUTSIDER)
STAFF = frozenset({MARKETER, APPROVER, SALES, OPS, ADMIN, OUTSIDER})
EVERYONE = STAFF | {ANON}
NOBODY: frozenset[str] = frozenset()
BUILDERS = frozenset({MARKETER, APPROVER, ADMIN})  # README: the Approver may everything a Marketer may
OPS_ONLY = frozenset({OPS, ADMIN})


def roles(*names: str) -> frozenset[str]:
    return frozenset({*names, ADMIN})


# --- The admin's models: who may view (changelist, change form, history), add and delete. ------
# From the README's Roles table (and core/roles.py, which implements it). Read-only admins (the
# ledgers and logs) refuse add and delete even to superusers.
@dataclass(frozen=True)
class ModelAccess:
    view: frozenset[str]
    add: frozenset[str]
    delete: frozenset[str]


def crud(*names: str) -> ModelAccess:
    return ModelAccess(roles(*names), roles(*names), roles(*names))


def read(*names: str, add: tuple[str, ...] = (), delete: bool = False) -> ModelAccess:
    """Viewers, plus who may add; history rows nobody deletes (superusers neither unless `delete`)."""
    return ModelAccess(roles(*names), roles(*add) if add else NOBODY, roles() if delete else NOBODY)


M, A, S, O = MARKETER, APPROVER, SALES, OPS  # noqa: E741  the README's four roles, in its order
ADMIN_MODELS: dict[str, ModelAccess] = {
    # Marketers build contacts and everything around them; Sales reads; Ops follows failures.
    "contacts.contact": ModelAccess(roles(M, A, S, O), roles(M, A), roles(M, A)),
    "contacts.customfield": crud(M, A),
    "contacts.tag": ModelAccess(roles(M, A, S), roles(M, A), roles(M, A)),
    "contacts.contactlist": ModelAccess(roles(M, A, S), roles(M, A), roles(M, A)),
    "contacts.importjob": read(M, A, O, add=(M, A), delete=True),  # history: only a superuser deletes
    "contacts.segment": ModelAccess(roles(M, A, S, O), roles(M, A), roles(M, A)),
    "contacts.leadroutingrule": crud(M, A),  # who gets a new MQL (contacts/owners.py)
    "contacts.event": read(M, A, S, O),
    "contacts.apikey": ModelAccess(roles(O), roles(O), NOBODY),  # revoked, never deleted
    "core.auditentry": read(O),
    "core.heartbeat": read(O, delete=True),
    "core.incident": read(O, delete=True),
    "scoring.scoringrule": crud(M, A),
    "scoring.gradeband": crud(M, A),
    "scoring.scoreentry": read(M, A, S),
    "scoring.recomputejob": read(M, A, O, add=(M, A)),
    "campaigns.emailtemplate": ModelAccess(roles(M, A, O), roles(M, A), roles(M, A)),
    "campaigns.senderprofile": ModelAccess(roles(M, A, O), roles(O), roles(O)),
    "campaigns.message": read(M, A, O),
    "campaigns.suppression": ModelAccess(roles(M, A, O), roles(O), roles(O)),
    "campaigns.bouncemailboxitem": read(O),  # what the bounce mailboxes held (a row stops a mail applying twice)
    # Consent (issue 20): marketers build topics and signup forms; the history and opt-ins are records.
    "consent.topic": crud(M, A),
    "consent.signupform": crud(M, A),
    "consent.consentrecord": read(M, A),
    "consent.optinrequest": read(M, A),
    "crm.crmconnection": ModelAccess(roles(M, A, O), roles(O), roles(O)),
    "crm.crmsyncitem": read(M, A, S, O, delete=True),
    "crm.crmsyncerror": read(M, A, O, delete=True),
    "crm.crmsynclog": read(M, A, S, O),
    # Workflows start as an imported file (admin:automation_workflow_import), never the add form.
    "automation.workflow": ModelAccess(roles(M, A, O), NOBODY, roles()),
    "automation.workflowversion": read(M, A, O),
    "automation.enrollment": read(M, A, O),
    "automation.steprun": read(M, A, O),
    "automation.webhookdelivery": read(M, A, O),
    # Broadcasts (issue 21): marketers build and send them (an Approver approves big ones); Ops watches.
    "broadcasts.broadcast": ModelAccess(roles(M, A, O), roles(M, A), roles(M, A)),
    "auth.user": crud(),
    "auth.group": crud(),
    # Login throttling (django-axes): Ops sees and clears lockouts; the logs are history.
    "axes.accessattempt": ModelAccess(roles(O), NOBODY, roles(O)),
    "axes.accessfailurelog": read(O, delete=True),
    "axes.accesslog": read(O, delete=True),
    # django-rq's own admin entry: its changelist *is* the queue dashboard (README: Ops only).
    "django_rq.dashboard": ModelAccess(OPS_ONLY, NOBODY, NOBODY),
}

# --- Every other named route: who gets past its access check. ---------------------------------
PUBLIC = "public"  # no login: anyone, anonymous included
API_KEY = "api-key"  # an API key, never a session: every role without one gets 401
BEARER = "bearer"  # /metrics: its own token; off (404) without METRICS_TOKEN

ROUTES: dict[str, frozenset[str] | str] = {
    "healthz": PUBLIC, "readyz": PUBLIC, "metrics": BEARER,
    "campaigns:open": PUBLIC, "campaigns:click": PUBLIC, "campaigns:unsubscribe": PUBLIC,
    # Signup forms and double opt-in links (consent/forms_public.py): rate limited per IP, size limited.
    "consent:form": PUBLIC, "consent:confirm": PUBLIC,
    "api:events": API_KEY, "api:contacts": API_KEY, "api:contact": API_KEY, "campaigns_api:bounces": API_KEY,
    "api:openapi": PUBLIC,  # the published schema; no data
    "broadcasts_api:send": API_KEY,  # campaigns:send scope
    "crm:inbound-status": PUBLIC,  # CRM webhooks: checked by the connection's signature, not a session
    "operations": OPS_ONLY, "operations-switch": OPS_ONLY, "operations-sender-resume": OPS_ONLY,
    "scoring:lead_list": roles(M, A, S), "scoring:lead_export": roles(M, A, S), "scoring:lead_detail": roles(M, A, S),
    "home": STAFF,  # /admin/ per role (core/views.py admin_home): redirects Sales and Ops to their pages
    "admin:index": STAFF, "admin:login": EVERYONE, "admin:logout": EVERYONE, "admin:jsi18n": STAFF,
    "admin:password_change": STAFF, "admin:password_change_done": STAFF,
    "admin:view_on_site": STAFF,
    "admin:autocomplete": NOBODY,  # refuses without a valid source field, then checks the target's view perm
    # Per-model extras.
    "admin:auth_user_password_change": roles(),
    "admin:contacts_contact_export_data": roles(M, A, S, O),
    "admin:contacts_contact_export": roles(M, A, S, O),
    "admin:contacts_importjob_mapping": roles(M, A),
    "admin:contacts_importjob_status": roles(M, A, O),
    "admin:contacts_importjob_error_report": roles(M, A, O),
    "admin:contacts_segment_preview": roles(M, A),
    # The builders' partials (contacts/builder.py, issue 19): whoever may add or change what they build.
    "admin:contacts_segment_builder": roles(M, A),
    "admin:scoring_scoringrule_builder": roles(M, A),
    "admin:campaigns_emailtemplate_preview": roles(M, A, O),
    "admin:automation_workflow_import": roles(M, A),
    "admin:automation_workflow_versions": roles(M, A, O),
    "admin:automation_workflow_act": roles(M, A),
    "admin:automation_workflow_export": roles(M, A, O),
    "admin:automation_workflow_edit": roles(M, A, O),  # Ops sees the editor read-only; POSTs need change
    "admin:broadcasts_broadcast_act": roles(M, A),  # test, approve, send, pause, resume, cancel (POST)
    "admin:broadcasts_broadcast_report": roles(M, A, O),  # a broadcast's report: whoever views broadcasts
    "admin:broadcasts_broadcast_report_csv": roles(M, A, O),
    # Dependency maps (issue 24): read-only, for whoever sees workflows; promoting (and acknowledging a
    # capacity warning) goes through admin:automation_workflow_act and the Approver's permission.
    "admin:automation_workflow_version_dependencies": roles(M, A, O),
    "admin:automation_workflow_dependencies": roles(M, A, O),
    # Workflow email reports (issue 21 item 4): whoever may view the outbox (campaigns.view_message).
    "admin:automation_workflow_emails": roles(M, A, O),
    "admin:automation_workflow_email_report": roles(M, A, O),
    "admin:automation_workflow_email_report_csv": roles(M, A, O),
}
# The queue dashboard, under /admin/rq/ and under django-rq's own /admin/django_rq/dashboard/.
RQ_VIEWS = ("home", "home_json", "metrics", "jobs", "queue_details", "finished_jobs", "failed_jobs",
            "delete_failed_jobs", "scheduled_jobs", "started_jobs", "deferred_jobs", "clear", "requeue_all",
            "job_detail", "result_detail", "delete_job", "requeue_job", "enqueue_job", "stop_job",
            "confirm_action", "actions", "workers", "worker_details", "scheduler_jobs", "cron_scheduler_detail",
            "cron_job_detail")
ROUTES.update({f"django_rq:{name}": OPS_ONLY for name in RQ_VIEWS})
ROUTES.update({f"admin:django_rq_{name}": OPS_ONLY for name in RQ_VIEWS})
# Its admin entry has no rows: change, history and delete answer 404 to Ops, 403 to the rest.
ROUTES.update({f"admin:django_rq_dashboard_{suffix}": OPS_ONLY for suffix in ("change", "history", "delete")})
# State-changing views are also POSTed (a GET may be refused by method before access is checked).
POSTED = {"operations-switch", "operations-sender-resume", "api:events", "api:contacts", "campaigns_api:bounces",
          "broadcasts_api:send", "admin:broadcasts_broadcast_act",
          "admin:automation_workflow_act", "admin:contacts_segment_preview",
          "admin:contacts_segment_builder", "admin:scoring_scoringrule_builder",
          *(f"{prefix}{name}" for prefix in ("django_rq:", "admin:django_rq_")
            for name in ("delete_failed_jobs", "clear", "requeue_all", "delete_job", "requeue_job", "enqueue_job",
                         "stop_job", "actions"))}
# Unnamed patterns, by their route.
UNNAMED: dict[str, frozenset[str] | str] = {
    "": PUBLIC,  # redirects to the admin
    "admin/(?P<url>.*)$": NOBODY,  # the admin's catch-all: 404 for staff, login for anonymous
    "admin/<path:object_id>/": STAFF,  # each model's old-style change URL: redirects to .../change/
}
ADMIN_SUFFIXES = {"changelist": "view", "change": "view", "history": "view", "add": "add", "delete": "delete"}


@dataclass(frozen=True)
class Route:
    route: str  # the pattern's text, prefixes joined
    name: str | None  # namespaced URL name
    url: str  # a concrete URL for it


def walk(patterns: list[URLPattern | URLResolver], prefix: str = "", ns: str = "") -> Iterator[tuple[str, str | None]]:
    for p in patterns:
        if isinstance(p, URLResolver):
            inner = f"{ns}:{p.namespace}" if ns and p.namespace else (p.namespace or ns)
            yield from walk(p.url_patterns, prefix + str(p.pattern), inner)
        else:
            name = f"{ns}:{p.name}" if ns and p.name else p.name
            yield prefix + str(p.pattern), name


CONVERTER = re.compile(r"<(?:(\w+):)?(\w+)>|\(\?P<(\w+)>[^)]*\)")


def concrete(route: str, values: dict[str, str]) -> str:
    """The route with each converter or named group filled from `values` (a dummy otherwise)."""

    def fill(match: re.Match[str]) -> str:
        key = match.group(2) or match.group(3)
        return values.get(key, "1" if (match.group(1) == "int") else "x")

    url = CONVERTER.sub(fill, route)
    return "/" + url.replace("^", "").replace("$", "").replace("/?", "/").replace("?", "")


def model_of(name: str | None) -> tuple[str, str] | None:
    """('app.model', suffix) for an admin per-model URL name, else None."""
    if not name or not name.startswith("admin:"):
        return None
    for model in admin.site._registry:
        stem = f"admin:{model._meta.app_label}_{model._meta.model_name}_"
        if name.startswith(stem):
            return model._meta.label_lower, name[len(stem):]
    return None


def expected_for(route: str, name: str | None) -> frozenset[str] | str | None:
    if name in ROUTES:
        return ROUTES[name]
    owner = model_of(name)
    if owner and owner[0] in ADMIN_MODELS and owner[1] in ADMIN_SUFFIXES:
        return getattr(ADMIN_MODELS[owner[0]], ADMIN_SUFFIXES[owner[1]])
    if name is None and route.startswith("admin/django_rq/"):
        return OPS_ONLY  # django-rq's old-style change URL, in its guarded admin entry
    if name is None:
        key = re.sub(r"^admin/[\w]+/[\w]+/", "admin/", route)
        return UNNAMED.get(key)
    if name == "admin:app_list":
        return "app_list"
    return None


# Where "not found" is the designed refusal (Django's admin hides what a user may not see).
NOT_FOUND_DENIES = {"admin:app_list", None}


def outcome(response: HttpResponseBase) -> str:
    """'denied' (refused by an access check), 'missing' (404: ran, found nothing) or 'allowed'."""
    status = response.status_code
    if status in (401, 403) or (status == 302 and "/admin/login/?next=" in response.get("Location", "")):
        return "denied"
    return "missing" if status == 404 else "allowed"


def acceptable(got: str, want: str, name: str | None) -> bool:
    if want == "allowed":
        return got in ("allowed", "missing")  # dummy ids (a job id, a worker key) may not exist
    return got == "denied" or (got == "missing" and name in NOT_FOUND_DENIES)


@pytest.fixture
def objects(db: None) -> dict[str, str]:
    """Real rows for the converters that name one, so a view cannot answer 404 for everybody."""
    contact = Contact.objects.create(email="walk@example.com", first_name="Walk")
    job = ImportJob.objects.create(file="imports/walk.csv", original_name="walk.csv")
    template = EmailTemplate.objects.create(key="walk", subject="Hello", html="<p>Hello</p>")
    workflow = Workflow.objects.create(key="walk", name="Walk")
    # django-rq's job views load the job first (a missing one is a 500 inside the library).
    job_id = django_rq.get_queue(sorted(settings.RQ_QUEUES)[0], commit_mode="auto").enqueue("core.tasks.heartbeat").id
    return {"job_id": job_id, "contact": str(contact.pk), "importjob": str(job.pk), "emailtemplate": str(template.pk),
            "workflow": str(workflow.pk), "email": contact.email,
            "content_type_id": str(ContentType.objects.get_for_model(Contact).pk)}


def urls_for(route: str, name: str | None, objects: dict[str, str]) -> list[str]:
    owner = model_of(name)
    values = {"job_id": objects["job_id"], "queue_index": "0", "connection_index": "0", "scheduler_index": "0",
              "email": objects["email"],
              "contact_id": objects["contact"], "content_type_id": objects["content_type_id"],
              "object_id": objects["contact"], "name": "sending"}
    if owner:
        model = apps.get_model(owner[0])
        row = model._default_manager.order_by().values_list("pk", flat=True).first() if model._meta.managed else None
        if row is None and owner[1] == "history":
            return []  # the history view looks the row up before checking access: only a real row tells
        values["object_id"] = values["pk"] = values["id"] = str(row if row is not None else 999999)
    if name == "admin:app_list":
        labels = re.search(r"\(\?P<app_label>([^)]*)\)", route)
        assert labels
        return [f"/admin/{label}/" for label in labels.group(1).split("|")]
    return [concrete(route, values)]


def app_list_expected(url: str) -> frozenset[str]:
    """An app's index shows to whoever may view one of its models there."""
    label = url.strip("/").split("/")[1]
    return frozenset().union(*(access.view for model, access in ADMIN_MODELS.items() if model.split(".")[0] == label))


def expected_outcome(expected: frozenset[str] | str, role: str, url: str) -> str:
    if expected == PUBLIC:
        return "allowed"
    if expected in (API_KEY, BEARER):
        return "denied"  # no key sent: a session is never enough
    if expected == "app_list":
        expected = app_list_expected(url)
    assert isinstance(expected, frozenset)
    return "allowed" if role in expected else "denied"


def test_every_route_answers_each_role_as_the_readme_says(role_users: dict[str, User], objects: dict[str, str],
                                                          settings: Any) -> None:  # noqa: F811
    settings.METRICS_TOKEN = "walk-token"  # /metrics on, so it answers 401 (not 404) without the token
    # A view that fails after its access check still let the role in: record the 500, do not raise.
    clients = {ANON: Client(raise_request_exception=False)}
    for role in STAFF:
        clients[role] = Client(raise_request_exception=False)
        clients[role].force_login(role_users[role])

    unlisted, wrong, checked = [], [], 0
    for route, name in walk(get_resolver().url_patterns):
        expected = expected_for(route, name)
        if expected is None:
            unlisted.append(f"{name or '(unnamed)'}  {route}")
            continue
        for url in urls_for(route, name, objects):
            methods = ("get", "post") if name in POSTED else ("get",)
            for role in ROLES:
                want = expected_outcome(expected, role, url)
                for method in methods:
                    response = getattr(clients[role], method)(url)
                    got = outcome(response)
                    checked += 1
                    # A POST-only view may refuse every GET (405, or 403 by method): only its POST counts.
                    if method == "get" and name in POSTED and (got != "allowed" or response.status_code == 405):
                        continue
                    if not acceptable(got, want, name):
                        wrong.append(f"{method.upper()} {url} ({name}) as {role}: {response.status_code}, "
                                     f"expected {want}")
    assert not unlisted, "routes missing from the access table in this file:\n" + "\n".join(unlisted)
    assert not wrong, f"{len(wrong)} of {checked} requests broke the Roles table:\n" + "\n".join(wrong)
