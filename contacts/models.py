from __future__ import annotations

from typing import Any, TypeVar

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import RegexValidator
from django.db import models
from django.db.models import F, Value
from django.db.models.functions import Coalesce, Lower, Trim

from contacts.countries import country_code
from contacts.emails import normalize_email


class LifecycleStage(models.TextChoices):
    SUBSCRIBER = "subscriber", "Subscriber"
    LEAD = "lead", "Lead"
    MQL = "mql", "Marketing qualified lead"
    SQL = "sql", "Sales qualified lead"
    OPPORTUNITY = "opportunity", "Opportunity"
    CUSTOMER = "customer", "Customer"
    OTHER = "other", "Other"


class ConsentStatus(models.TextChoices):
    UNKNOWN = "unknown", "Unknown"
    GRANTED = "granted", "Granted"
    WITHDRAWN = "withdrawn", "Withdrawn"


class FieldType(models.TextChoices):
    TEXT = "text", "Text"
    NUMBER = "number", "Number"
    DATE = "date", "Date"
    BOOL = "bool", "Yes/no"
    CHOICE = "choice", "Choice"


class CustomField(models.Model):
    """A marketer-defined attribute, stored under its key in Contact.attributes."""

    Type = FieldType

    key = models.SlugField(
        max_length=64, unique=True, allow_unicode=False,
        help_text="Lower-case letters, digits and underscores; the key in contact attributes and templates",
        validators=[RegexValidator(r"^[a-z][a-z0-9_]*$", "Start with a letter; use a-z, 0-9 and _ only.")],
    )
    label = models.CharField(max_length=120)
    field_type = models.CharField(max_length=10, choices=FieldType.choices, default=FieldType.TEXT)
    choices = models.JSONField(default=list, blank=True, help_text='For choice fields: ["gold", "silver"]')
    required = models.BooleanField(default=False, help_text="New contacts must have a value")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["key"]
        constraints = [
            models.CheckConstraint(condition=models.Q(field_type__in=FieldType.values), name="customfield_type_valid"),
        ]

    def __str__(self) -> str:
        return f"{self.label} ({self.key})"

    def clean(self) -> None:
        super().clean()
        if self.field_type == self.Type.CHOICE:
            if not isinstance(self.choices, list) or not self.choices or not all(
                isinstance(c, str) and c for c in self.choices
            ):
                raise ValidationError({"choices": "A choice field needs a non-empty list of text choices."})
        elif self.choices:
            raise ValidationError({"choices": "Only choice fields have choices."})
        if self.key in contact_field_names():
            raise ValidationError({"key": f"{self.key!r} is a built-in contact field."})


class Tag(models.Model):
    name = models.CharField(max_length=100, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class ContactList(models.Model):
    """A static list: contacts are added and removed explicitly (segments are the dynamic kind)."""

    name = models.CharField(max_length=150, unique=True)
    description = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]
        verbose_name = "list"

    def __str__(self) -> str:
        return self.name


class ContactQuerySet(models.QuerySet["Contact"]):
    def with_scores(self) -> ContactQuerySet:
        """Each contact's score and grade in the same query (LEFT JOIN ContactScore; none: 0 and '')."""
        # The annotations land in the properties' setters (the stubs take them for redefinitions).
        return self.annotate(  # type: ignore[no-redef]
            score=Coalesce(F("scorecard__score"), Value(0)),
            grade=Coalesce(F("scorecard__grade"), Value(""), output_field=models.CharField()),
        )


class Contact(models.Model):
    # Stored normalised (see contacts.emails); the check constraint keeps raw writes honest.
    email = models.EmailField(max_length=254, unique=True)
    first_name = models.CharField(max_length=150, blank=True)
    last_name = models.CharField(max_length=150, blank=True)
    company = models.CharField(max_length=200, blank=True)
    job_title = models.CharField(max_length=200, blank=True)
    phone = models.CharField(max_length=50, blank=True)
    country = models.CharField(max_length=2, blank=True, help_text="ISO 3166-1 alpha-2 code")
    lifecycle_stage = models.CharField(
        max_length=20, choices=LifecycleStage.choices, default=LifecycleStage.SUBSCRIBER
    )
    attributes = models.JSONField(default=dict, blank=True, help_text="Custom fields, by key")
    consent_status = models.CharField(
        max_length=20, choices=ConsentStatus.choices, default=ConsentStatus.UNKNOWN
    )
    consent_source = models.CharField(max_length=200, blank=True, help_text="Form, import or API that recorded consent")
    consent_at = models.DateTimeField(null=True, blank=True)
    is_test = models.BooleanField(
        default=False, help_text="Part of the test audience that staging workflow versions run for"
    )
    tags = models.ManyToManyField(Tag, blank=True, related_name="contacts")
    lists = models.ManyToManyField(ContactList, blank=True, related_name="contacts")
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="owned_contacts",
        help_text="Sales rep who owns this lead", db_index=False,  # partial index below
    )
    # score and grade live in ContactScore (below): see Contact.score.
    mql_at = models.DateTimeField(null=True, blank=True, editable=False, help_text="When it became an MQL")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = ContactQuerySet.as_manager()

    class Meta:
        # Newest first by id: same order as created_at, served by the primary key index, so a
        # million-row table needs no extra index (each index costs imports ~15 % of their time).
        ordering = ["-id"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(email=Lower(Trim("email"))), name="contact_email_normalised"
            ),
            models.CheckConstraint(
                condition=models.Q(lifecycle_stage__in=LifecycleStage.values), name="contact_lifecycle_stage_valid"
            ),
            models.CheckConstraint(
                condition=models.Q(consent_status__in=ConsentStatus.values), name="contact_consent_status_valid"
            ),
        ]
        indexes = [
            # Admin filter and sales views by stage. Partial: most contacts are subscribers (a
            # filter on them scans anyway), and imports, which add subscribers, skip the index.
            models.Index(fields=["lifecycle_stage"], name="contact_stage_idx",
                         condition=~models.Q(lifecycle_stage="subscriber")),
            # Staging runs select the test audience.
            models.Index(fields=["is_test"], name="contact_is_test_idx", condition=models.Q(is_test=True)),
            # The lead view's owner filter and SET_NULL when a user goes. Partial: contacts without an
            # owner (most, until sales assigns them) cost imports and score updates no index write.
            models.Index(fields=["owner"], name="contact_owner_idx", condition=models.Q(owner__isnull=False)),
        ]

    def __str__(self) -> str:
        return self.email

    # The cached score and grade, read from ContactScore (no row: 0 and ''). Querysets that list
    # many contacts use Contact.objects.with_scores(), which sets both in the same query.
    @property
    def score(self) -> int:
        if "_score" not in self.__dict__:
            self._load_scorecard()
        return int(self.__dict__["_score"])

    @score.setter
    def score(self, value: int) -> None:
        self.__dict__["_score"] = value

    @property
    def grade(self) -> str:
        if "_grade" not in self.__dict__:
            self._load_scorecard()
        return str(self.__dict__["_grade"])

    @grade.setter
    def grade(self, value: str) -> None:
        self.__dict__["_grade"] = value

    def _load_scorecard(self) -> None:
        row = ContactScore.objects.filter(contact_id=self.pk).values_list("score", "grade").first() \
            if self.pk is not None else None
        self.__dict__["_score"], self.__dict__["_grade"] = row or (0, "")

    def scores_forget(self) -> None:
        """Drop the score and grade read so far: the next access reads ContactScore again."""
        self.__dict__.pop("_score", None)
        self.__dict__.pop("_grade", None)

    def refresh_from_db(self, *args: Any, **kwargs: Any) -> None:
        super().refresh_from_db(*args, **kwargs)
        self.scores_forget()

    @property
    def full_name(self) -> str:
        return f"{self.first_name} {self.last_name}".strip()

    def clean(self) -> None:
        super().clean()
        if self.email:
            try:
                self.email = normalize_email(self.email)
            except ValidationError as exc:
                raise ValidationError({"email": exc.messages}) from exc
        if self.country:
            try:
                self.country = country_code(self.country)  # "USA", "Germany" -> US, DE; "XX" refused
            except ValidationError as exc:
                raise ValidationError({"country": exc.messages}) from exc
        from contacts.fields import validate_attributes  # avoids a models <-> fields import cycle

        self.attributes = validate_attributes(self.attributes, creating=self._state.adding)


SCORE_FIELD_NAMES = ("score", "grade")


class ContactScore(models.Model):
    """A contact's cached score and grade, kept from the score ledger by the scoring services.

    A narrow table of its own, not columns on Contact: a full recompute rewrites a million scores,
    and on the contact each one was a new version of the whole row plus an entry in every contact
    index (email, stage, score: the update is never HOT). Here it is 40 bytes and two indexes.
    No row means score 0 and no grade, so contacts that never scored cost nothing.
    """

    # No database-level foreign key, as on the ledger: PostgreSQL would lock the contact row for
    # every score written, and a contact erased while a recompute range runs would fail that range
    # at COMMIT. Django cascades the delete itself; every read goes from the contact to its row.
    contact = models.OneToOneField(Contact, primary_key=True, on_delete=models.CASCADE, related_name="scorecard",
                                   db_constraint=False)
    score = models.IntegerField(default=0)
    grade = models.CharField(max_length=2, blank=True, default="")

    class Meta:
        indexes = [
            # Sales lead view: ranked by score; segments filtering on score. Zero scores stay out.
            models.Index(fields=["-score", "-contact"], name="contactscore_rank_idx", condition=~models.Q(score=0)),
        ]

    def __str__(self) -> str:
        return f"{self.contact_id}: {self.score} {self.grade}".strip()


RowT = TypeVar("RowT", bound=models.Model)


def with_contact_scores(rows: models.QuerySet[RowT]) -> models.QuerySet[RowT]:
    """Rows that carry a contact (select_related("contact")), with that contact's score and grade
    in the same query: ContactScore LEFT JOINed (no row: 0 and ''). contact_scores_set then puts
    them on the contacts, as Contact.objects.with_scores() does, so nothing reads them one by one."""
    return rows.annotate(
        contact_score=Coalesce(F("contact__scorecard__score"), Value(0)),
        contact_grade=Coalesce(F("contact__scorecard__grade"), Value(""), output_field=models.CharField()),
    )


def contact_scores_set(rows: list[RowT]) -> list[RowT]:
    """The score and grade with_contact_scores read, on each row's contact; returns the rows."""
    for row in rows:
        contact = row.contact  # type: ignore[attr-defined]
        contact.score, contact.grade = row.contact_score, row.contact_grade  # type: ignore[attr-defined]
    return rows


def contact_field_names() -> frozenset[str]:
    """Names a custom field or an import column may not take: the contact's fields, and score and
    grade, which read as fields though ContactScore holds them."""
    fields = {f.name for f in Contact._meta.get_fields() if not (f.is_relation and f.auto_created)}
    return frozenset(fields | set(SCORE_FIELD_NAMES))


class ImportStatus(models.TextChoices):
    PENDING = "pending", "Waiting for mapping"
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    COMPLETED = "completed", "Completed"
    FAILED = "failed", "Failed"


class OnExisting(models.TextChoices):
    UPDATE = "update", "Update with non-empty values"
    SKIP = "skip", "Skip existing contacts"
    FILL_EMPTY = "fill-empty", "Only fill empty fields"


class ImportJob(models.Model):
    """One CSV import: its file, mapping, options, progress, counts and error report."""

    Status = ImportStatus
    OnExisting = OnExisting

    file = models.FileField(upload_to="imports/%Y/%m/")
    original_name = models.CharField(max_length=255)
    file_size = models.BigIntegerField(default=0)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)
    # Reading options: empty means detect.
    encoding = models.CharField(max_length=20, blank=True)
    delimiter = models.CharField(max_length=2, blank=True)
    # {"<CSV header>": "<target>"}; targets: a contact field, "attributes.<key>", "" to ignore.
    mapping = models.JSONField(default=dict, blank=True)
    # The file's consent basis for rows without consent (issue 20; consent/imports.py):
    # {"basis": "granted"|"confirm", "source": ..., "at": "YYYY-MM-DD"}; empty: per row only.
    consent_basis = models.JSONField(default=dict, blank=True)
    create_fields = models.BooleanField(
        default=False, help_text="Create text custom fields for mapped attribute keys that do not exist yet"
    )
    on_existing = models.CharField(max_length=12, choices=OnExisting.choices, default=OnExisting.UPDATE)
    tag = models.ForeignKey(
        Tag, null=True, blank=True, on_delete=models.SET_NULL, help_text="Tag every imported contact"
    )
    add_to_list = models.ForeignKey(ContactList, null=True, blank=True, on_delete=models.SET_NULL)

    status = models.CharField(max_length=10, choices=ImportStatus.choices, default=ImportStatus.PENDING)
    message = models.TextField(blank=True, help_text="What went wrong, or a summary")
    progress = models.PositiveSmallIntegerField(default=0, help_text="Percent done")
    rows_read = models.BigIntegerField(default=0)
    created = models.BigIntegerField(default=0)
    updated = models.BigIntegerField(default=0)
    skipped = models.BigIntegerField(default=0)
    rejected = models.BigIntegerField(default=0)
    duplicates = models.BigIntegerField(default=0, help_text="Rows superseded by a later row with the same email")
    error_report = models.FileField(upload_to="imports/reports/%Y/%m/", blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    started_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True, help_text="Last sign of life of the running worker")
    finished_at = models.DateTimeField(null=True, blank=True)
    log = models.JSONField(default=list, blank=True, help_text="What happened, in order")

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.CheckConstraint(condition=models.Q(status__in=ImportStatus.values), name="importjob_status_valid"),
            models.CheckConstraint(
                condition=models.Q(on_existing__in=OnExisting.values), name="importjob_on_existing_valid"
            ),
        ]
        indexes = [
            # The sweeper (contacts.tasks.import_sweep) looks for running jobs whose worker went silent.
            models.Index(fields=["heartbeat_at"], name="importjob_running_idx",
                         condition=models.Q(status="running")),
        ]

    def __str__(self) -> str:
        return f"Import #{self.pk} {self.original_name}"

    @property
    def is_finished(self) -> bool:
        return self.status in {ImportStatus.COMPLETED, ImportStatus.FAILED}


class ApiScope(models.TextChoices):
    """What an API key may do; each /api/v1/ endpoint needs one (contacts/api/views.py api_view)."""

    EVENTS_WRITE = "events:write", "events:write - send events (POST /events)"
    CONTACTS_READ = "contacts:read", "contacts:read - read a contact's score and data (GET /contacts/<email>)"
    CONTACTS_WRITE = "contacts:write", "contacts:write - create and update contacts (POST /contacts)"
    BOUNCES_WRITE = "bounces:write", "bounces:write - report bounces and complaints, which suppress (POST /bounces)"
    CAMPAIGNS_SEND = "campaigns:send", "campaigns:send - send an approved broadcast (POST /campaigns/<key>/send)"


def api_key_default_scopes() -> list[str]:
    """A new key sends events and nothing else unless more is chosen."""
    return [ApiScope.EVENTS_WRITE.value]


def validate_api_scopes(value: Any) -> None:
    if not isinstance(value, list) or not all(isinstance(scope, str) for scope in value):
        raise ValidationError("scopes must be a list of scope names")
    unknown = sorted(set(value) - set(ApiScope.values))
    if unknown:
        raise ValidationError(f"unknown scope(s) {', '.join(unknown)}; known: {', '.join(ApiScope.values)}")
    if len(set(value)) != len(value):
        raise ValidationError("a scope is listed twice")


# A new key's requests per minute: a signup form posting one event per signup at 50/s (the rate
# docs/event-api.md and bench/workflows.py plan for) uses 3,000; twice that leaves room for a peak
# within the calendar minute. It still caps a leaked or runaway key (limits are per key, so other
# keys keep their share). Was 600, which refused half of such a form's requests (issue 25).
API_KEY_DEFAULT_RATE_PER_MINUTE = 6000


class ApiKey(models.Model):
    """A key for the event and contact API. Only a hash is stored; the key is shown once."""

    name = models.CharField(max_length=100, unique=True)
    prefix = models.CharField(max_length=12, unique=True, help_text="First characters, to find the key by")
    key_hash = models.CharField(max_length=64, help_text="SHA-256 of the whole key")
    rate_limit_per_minute = models.PositiveIntegerField(default=API_KEY_DEFAULT_RATE_PER_MINUTE)
    create_unknown_contacts = models.BooleanField(
        default=True, help_text="Events for unknown emails create the contact (else they are errors)"
    )
    # A JSON list (portable to SQLite, unlike ArrayField); checked against ApiScope on every save.
    scopes = models.JSONField(default=api_key_default_scopes, validators=[validate_api_scopes],
                              help_text="What the key may do; a request outside them is refused with 403")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["name"]
        verbose_name = "API key"

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    def has_scope(self, scope: str) -> bool:
        return scope in (self.scopes or [])


class Event(models.Model):
    """Something a contact did or that happened to them; feeds scoring, segments and triggers."""

    # No index of its own: event_contact_type_idx leads with the contact (an index per event costs ingest).
    contact = models.ForeignKey(Contact, on_delete=models.CASCADE, related_name="events", db_index=False)
    event_type = models.CharField(max_length=100)
    properties = models.JSONField(default=dict, blank=True)
    occurred_at = models.DateTimeField()
    received_at = models.DateTimeField(auto_now_add=True)
    source = models.CharField(max_length=100, help_text="api:<key>, tracking, crm, system, ...")
    idempotency_key = models.CharField(max_length=200, null=True, blank=True)
    processed_at = models.DateTimeField(null=True, blank=True, help_text="When scoring, segments and triggers ran")
    # The request (X-Request-ID) or job that created the event; enrollments, messages and CRM rows
    # it causes carry the same id, so one event can be followed through logs and rows.
    correlation_id = models.CharField(max_length=100, blank=True, default="", db_default="")

    class Meta:
        ordering = ["-occurred_at", "-id"]
        constraints = [
            # The same event sent twice by a source is one event.
            models.UniqueConstraint(fields=["source", "idempotency_key"], name="event_idempotency",
                                    condition=models.Q(idempotency_key__isnull=False)),
        ]
        indexes = [
            # "Contact did X in the last N days": segments, scoring caps, branch steps, timelines.
            models.Index(fields=["contact", "event_type", "-occurred_at"], name="event_contact_type_idx"),
            # Segment counts over everyone who did X recently, and the scoring recompute's matching
            # events. contact_id and id are included (PostgreSQL) so both are index-only scans.
            models.Index(fields=["event_type", "-occurred_at"], include=["contact", "id"],
                         name="event_type_time_contact_idx"),
            # The events sweeper re-queues events whose processing job was lost.
            models.Index(fields=["received_at"], name="event_unprocessed_idx",
                         condition=models.Q(processed_at__isnull=True)),
        ]

    def __str__(self) -> str:
        return f"{self.event_type} #{self.pk}"


class Segment(models.Model):
    """A dynamic audience: a filter tree compiled to one SQL query (contacts.segments)."""

    name = models.CharField(max_length=150, unique=True)
    description = models.TextField(blank=True)
    definition = models.JSONField(default=dict, help_text="Filter tree; see docs/segments.md")
    is_active = models.BooleanField(default=True)
    member_count = models.PositiveIntegerField(default=0, editable=False)
    refreshed_at = models.DateTimeField(null=True, blank=True, editable=False)
    # The last full refresh that failed (cleared by the next one that succeeds): the operations
    # page lists these, a silently stale segment is the failure it exists to catch.
    refresh_failed_at = models.DateTimeField(null=True, blank=True, editable=False)
    refresh_error = models.TextField(blank=True, default="", db_default="", editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class SegmentMembership(models.Model):
    """Materialised membership, kept current on every contact change and event."""

    # Indexed by segment_member_unique (segment first) and segment_member_contact_idx: no FK indexes
    # besides (each costs every membership change a write; the contact one was a duplicate).
    segment = models.ForeignKey(Segment, on_delete=models.CASCADE, related_name="memberships", db_index=False)
    contact = models.ForeignKey(Contact, on_delete=models.CASCADE, related_name="segment_memberships",
                                db_index=False)
    entered_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["segment", "contact"], name="segment_member_unique")]
        indexes = [
            # Incremental updates look up one contact's memberships.
            models.Index(fields=["contact"], name="segment_member_contact_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.contact_id} in {self.segment_id}"


class LeadRouting(models.TextChoices):
    ANY = "any", "Every lead"
    COUNTRY = "country", "Leads from these countries"
    SEGMENT = "segment", "Leads in this segment"
    COMPANY = "company", "Leads whose company contains"


class LeadRoutingRule(models.Model):
    """Who owns a lead when it becomes an MQL and has no owner yet (contacts/owners.py): the first
    active rule, by position, that matches the lead gives it to its owners in turn (round robin)."""

    name = models.CharField(max_length=150, unique=True)
    position = models.PositiveIntegerField(default=0, help_text="Rules are tried lowest first")
    is_active = models.BooleanField(default=True)
    match = models.CharField(max_length=10, choices=LeadRouting.choices, default=LeadRouting.ANY)
    countries = models.CharField(max_length=300, blank=True, help_text="ISO codes or names, comma-separated")
    segment = models.ForeignKey(Segment, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    company_contains = models.CharField(max_length=200, blank=True)
    owners = models.ManyToManyField(settings.AUTH_USER_MODEL, related_name="+",
                                    help_text="Sales users who take these leads in turn")
    # The round-robin cursor: advanced with a conditional UPDATE, so two workers never give the
    # same turn twice.
    turns = models.PositiveIntegerField(default=0, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["position", "id"]

    def __str__(self) -> str:
        return self.name
