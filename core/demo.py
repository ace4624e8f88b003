"""Demo data for `make run`: contacts and one user per role, with printed passwords."""

from __future__ import annotations

import datetime as dt
import json
import random
import secrets
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth.models import Group, User
from django.utils import timezone

from contacts.models import ConsentStatus, Contact, CustomField, LifecycleStage
from core import roles

DEMO_USERS: dict[str, str | None] = {
    "admin": None,  # superuser
    "marketer": roles.MARKETER,
    "approver": roles.APPROVER,
    "sales": roles.SALES,
    "ops": roles.OPS,
}

FIRST = ["Ada", "Grace", "Alan", "Linus", "Margaret", "Ken", "Barbara", "Dennis", "Radia", "Guido",
         "Frances", "Tim", "Hedy", "Vint", "Katherine", "John", "Sophie", "Yukihiro", "Anita", "Bjarne"]
LAST = ["Lovelace", "Hopper", "Turing", "Torvalds", "Hamilton", "Thompson", "Liskov", "Ritchie",
        "Perlman", "van Rossum", "Allen", "Berners-Lee", "Lamarr", "Cerf", "Johnson", "McCarthy"]
COMPANIES = [("Acme Corp", "acme.example"), ("Globex", "globex.example"), ("Initech", "initech.example"),
             ("Umbrella", "umbrella.example"), ("Hooli", "hooli.example"), ("Stark Industries", "stark.example"),
             ("Wayne Enterprises", "wayne.example"), ("Tyrell", "tyrell.example")]
TITLES = ["Marketing Manager", "CTO", "Head of Growth", "Developer", "VP Sales", "Founder", "Analyst"]
COUNTRIES = ["US", "GB", "DE", "FR", "NL", "SE", "CA", "AU", "JP", "BR"]


def credentials_path() -> Path:
    return Path(settings.VAR_DIR) / "demo-credentials.json"


def read_credentials() -> dict[str, str]:
    path = credentials_path()
    if not path.is_file():
        return {}
    data: dict[str, str] = json.loads(path.read_text())
    return data


def seed_users() -> dict[str, str]:
    """Create (or keep) the demo users; returns username -> password.

    Passwords are random per installation and kept in VAR_DIR (mode 600) so that a second
    `make run` prints the same logins instead of silently changing them.
    """
    known = read_credentials()
    result: dict[str, str] = {}
    for username, role in DEMO_USERS.items():
        user = User.objects.filter(username=username).first()
        password = known.get(username)
        if user is None or password is None or not user.check_password(password):
            password = secrets.token_urlsafe(9)
            if user is None:
                user = User(username=username, email=f"{username}@leadflow.example")
            user.set_password(password)
        user.is_staff = True
        user.is_superuser = role is None
        user.save()
        if role:
            user.groups.set([Group.objects.get(name=role)])
        result[username] = password
    path = credentials_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2))
    path.chmod(0o600)
    return result


def demo_contacts(count: int, seed: int = 42) -> list[Contact]:
    rng = random.Random(seed)
    now = timezone.now()
    contacts = []
    for i in range(count):
        first, last = rng.choice(FIRST), rng.choice(LAST)
        company, domain = rng.choice(COMPANIES)
        is_test = i < 5  # the staging test audience
        email = f"test{i}@leadflow-staging.example" if is_test else (
            f"{first}.{last}.{i}@{domain}".lower().replace(" ", "")
        )
        consent = rng.choice([ConsentStatus.GRANTED] * 4 + [ConsentStatus.UNKNOWN, ConsentStatus.WITHDRAWN])
        attributes: dict[str, Any] = {"plan": rng.choice(["free", "team", "enterprise"]),
                                      "employees": rng.choice([5, 20, 80, 250, 1200])}
        contacts.append(Contact(
            email=email, first_name=first, last_name=last, company=company,
            job_title=rng.choice(TITLES), country=rng.choice(COUNTRIES),
            lifecycle_stage=rng.choice([LifecycleStage.SUBSCRIBER, LifecycleStage.LEAD, LifecycleStage.LEAD,
                                        LifecycleStage.MQL, LifecycleStage.CUSTOMER]),
            attributes=attributes, consent_status=consent,
            consent_source="demo seed" if consent != ConsentStatus.UNKNOWN else "",
            consent_at=now if consent != ConsentStatus.UNKNOWN else None,
            is_test=is_test,
        ))
    return contacts


DEMO_FIELDS: list[dict[str, Any]] = [
    {"key": "plan", "label": "Plan", "field_type": CustomField.Type.CHOICE, "choices": ["free", "team", "enterprise"]},
    {"key": "employees", "label": "Employees", "field_type": CustomField.Type.NUMBER},
]


def seed_contacts(count: int) -> int:
    """Insert demo contacts (and the custom fields they use) not there yet; returns how many were new."""
    for spec in DEMO_FIELDS:
        CustomField.objects.get_or_create(key=spec["key"], defaults=spec)
    contacts = demo_contacts(count)
    for contact in contacts:
        contact.full_clean(validate_unique=False, validate_constraints=False)
    existing = set(Contact.objects.filter(email__in=[c.email for c in contacts]).values_list("email", flat=True))
    new = [c for c in contacts if c.email not in existing]
    Contact.objects.bulk_create(new, batch_size=500)
    return len(new)


# The names the product itself records: open tracking writes `email_opened` (campaigns/services.py)
# and docs/event-api.md sends page views as {"path": ...}; the demo rules must match them.
DEMO_EVENTS = [("page_view", {"path": "/pricing"}), ("page_view", {"path": "/blog"}), ("email_opened", {}),
               ("webinar_registered", {}), ("demo_booked", {})]


def seed_scoring() -> int:
    """Grades, scoring rules, segments and a few hundred events, processed by the real pipeline,
    so the lead view and the segments have something to show. Returns how many events were new."""
    from contacts.models import Event, Segment
    from contacts.pipeline import contacts_rescan_all, events_process
    from scoring.models import GradeBand, RuleKind, ScoringRule

    for grade, min_score, is_mql in (("A", 60, True), ("B", 30, False), ("C", 10, False)):
        GradeBand.objects.get_or_create(grade=grade, defaults={"min_score": min_score, "is_mql": is_mql})
    rules: list[dict[str, Any]] = [
        {"name": "Visited pricing", "kind": RuleKind.BEHAVIOUR, "event_type": "page_view",
         "property_filters": {"path": "/pricing"}, "points": 15, "cap_points": 45, "cap_window_days": 30},
        {"name": "Booked a demo", "kind": RuleKind.BEHAVIOUR, "event_type": "demo_booked", "points": 40,
         "repeatable": False},
        {"name": "Opened an email", "kind": RuleKind.BEHAVIOUR, "event_type": "email_opened", "points": 2,
         "half_life_days": 30},
        {"name": "Enterprise plan", "kind": RuleKind.FIT, "points": 10,
         "conditions": {"attribute": "plan", "op": "eq", "value": "enterprise"}},
    ]
    for rule in rules:
        ScoringRule.objects.get_or_create(name=rule["name"], defaults=rule)
    # Databases seeded before the fix hold the two rules that matched nothing; mend only those.
    ScoringRule.objects.filter(name="Opened an email", event_type="email_open").update(event_type="email_opened")
    ScoringRule.objects.filter(name="Visited pricing", property_filters={"page": "/pricing"}) \
        .update(property_filters={"path": "/pricing"})
    Segment.objects.get_or_create(name="Hot leads", defaults={
        "definition": {"field": "score", "op": "gte", "value": 60}})
    Segment.objects.get_or_create(name="Enterprise prospects", defaults={"definition": {"all": [
        {"attribute": "plan", "op": "eq", "value": "enterprise"},
        {"event": "page_view", "did": True, "within_days": 30}]}})

    rng = random.Random(7)
    now = timezone.now()
    contacts = list(Contact.objects.filter(is_test=False).order_by("id").values_list("id", flat=True)[:120])
    events = []
    for n, contact_id in enumerate(contacts):
        for k in range(rng.randint(1, 6)):
            event_type, properties = rng.choice(DEMO_EVENTS)
            events.append(Event(contact_id=contact_id, event_type=event_type, properties=properties,
                                occurred_at=now - dt.timedelta(days=rng.randint(0, 20), minutes=k), source="demo",
                                idempotency_key=f"demo-{n}-{k}"))
    Event.objects.bulk_create(events, ignore_conflicts=True)
    fresh = list(Event.objects.filter(source="demo", processed_at__isnull=True).values_list("id", flat=True))
    for start in range(0, len(fresh), 500):
        events_process(event_ids=fresh[start:start + 500])
    contacts_rescan_all()  # fit rules and segments for contacts without events too
    return len(fresh)


DEMO_TEMPLATES = [
    ("webinar-welcome", "transactional", "See you at the webinar, {{ contact.first_name|default:'there' }}",
     "<p>Hi {{ contact.first_name|default:'there' }},</p><p>You are registered. "
     "<a href=\"https://example.com/webinar/agenda\">See the agenda</a>.</p>"),
    ("monthly-newsletter", "marketing", "What's new at {{ contact.company|default:'your team' }}'s favourite tool",
     "<h1>This month</h1><p>Three new features. <a href=\"https://example.com/blog\">Read the blog</a>.</p>"),
]


def seed_delivery() -> int:
    """A default sender (the EMAIL_URL backend: the console in development) and two templates."""
    from campaigns.models import EmailTemplate, SenderProfile

    SenderProfile.objects.get_or_create(name="Default", defaults={
        "from_email": "hello@leadflow.example", "from_name": "Leadflow demo", "rate": "20/s", "burst": 10,
        "postal_address": "Leadflow Inc., 1 Example Street, Springfield", "is_default": True,
        "staging_recipient": "staging@leadflow.example",
    })
    created = 0
    for key, kind, subject, html in DEMO_TEMPLATES:
        created += EmailTemplate.objects.get_or_create(key=key, defaults={
            "name": key.replace("-", " ").capitalize(), "kind": kind, "subject": subject, "html": html})[1]
    return created
