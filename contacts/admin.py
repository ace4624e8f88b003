"""Admin for contact data: contacts (with GDPR erase and data export), custom fields, tags, lists,
the audit trail, and the CSV import wizard (upload -> column mapping and preview -> live job page)."""

from __future__ import annotations

import datetime as dt
from collections import Counter
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.contrib.admin.utils import unquote
from django.contrib.auth.models import User
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.files.uploadedfile import UploadedFile
from django.db import models
from django.db.models import Count, QuerySet
from django.http import FileResponse, Http404, HttpRequest, HttpResponse, HttpResponseBase, JsonResponse
from django.shortcuts import redirect
from django.template.defaultfilters import filesizeformat
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from django.utils.html import format_html, format_html_join
from django.utils.text import capfirst
from import_export.admin import ExportMixin

from config.db_router import replica_reads
from consent.imports import consent_basis_check
from consent.services import consent_change_note
from contacts.countries import country_code
from contacts.emails import CanonicalEmailField
from contacts.fields import load_specs
from contacts.imports.jobs import import_job_create, import_job_fail, import_job_start, import_preview
from contacts.imports.mapping import (
    ALIASES,
    ATTR_PREFIX,
    IMPORTABLE_FIELDS,
    attribute_key,
    normalise_header,
    suggest_mapping,
)
from contacts.imports.reader import CsvSource, ImportFileError, detect_format
from contacts.models import (
    Contact,
    ContactList,
    CustomField,
    Event,
    ImportJob,
    LeadRoutingRule,
    Tag,
    contact_field_names,
)
from contacts.overview import contact_overview
from contacts.owners import contacts_owner_set, sales_users
from contacts.resources import ContactResource
from contacts.services import contact_erase, contact_export_data
from core.admin_utils import EstimatedCountPaginator, ReadOnlyAdmin
from core.audit import audit_record
from core.models import AuditEntry
from core.queues import get_queue

ERASE_MAX = 500  # per confirmation: erasure runs in the request, one audited transaction per contact
PREVIEW_ROWS = 20
TEMPLATES = "admin/contacts/importjob/"


# --- Contacts -------------------------------------------------------------------------------------


class ContactAdminForm(forms.ModelForm):
    # The canonical form before the unique check (Django's EmailField would refuse a fullwidth
    # address with a vague message and let a soft hyphen in the domain through as a new contact).
    email = CanonicalEmailField(label="Email")
    # Wider than the 2-letter column: "USA", "DEU" or "Germany" are stored as US, DE.
    country = forms.CharField(required=False, max_length=100, help_text="ISO code (DE, DEU) or name (Germany)")

    class Meta:
        model = Contact
        fields = ["email"]  # the admin adds the fieldsets' other fields

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        owner: Any = self.fields.get("owner")
        if owner is not None:  # the lead's owner: one of the Sales users (contacts/owners.py)
            owner.queryset = sales_users()
            owner.help_text = "The Sales user who owns this lead (notify_sales with email 'owner' writes to them)"

        for spec in getattr(self, "custom_fields", ()):  # typed custom fields start from the stored values
            value = (self.instance.attributes or {}).get(spec.key)
            if value is not None:
                self.fields[ATTR_FIELD + spec.key].initial = value

    def clean_country(self) -> str:
        return country_code(self.cleaned_data.get("country") or "")

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        # A typed custom field that was changed wins over the JSON (the advanced view) for its key.
        attributes = dict(data.get("attributes") or self.instance.attributes or {})
        for spec in getattr(self, "custom_fields", ()):
            name = ATTR_FIELD + spec.key
            if name in self.changed_data and name in data:
                value = data[name]
                if value in (None, ""):
                    attributes.pop(spec.key, None)
                else:
                    attributes[spec.key] = value.isoformat() if isinstance(value, dt.date) else value
        data["attributes"] = attributes
        return data


ATTR_FIELD = "attr__"  # form field name prefix of a typed custom field


def typed_field(spec: CustomField) -> forms.Field:
    """The form field of one custom field, by its type (contacts/fields.py coerces the same way)."""
    common: dict[str, Any] = {"required": False, "label": spec.label or spec.key}
    if spec.field_type == CustomField.Type.NUMBER:
        return forms.FloatField(**common)
    if spec.field_type == CustomField.Type.DATE:
        return forms.DateField(**common, widget=forms.DateInput(attrs={"type": "date"}))
    if spec.field_type == CustomField.Type.BOOL:
        return forms.NullBooleanField(**common)
    if spec.field_type == CustomField.Type.CHOICE:
        return forms.ChoiceField(**common, choices=[("", "—"), *((c, c) for c in spec.choices or [])])
    return forms.CharField(**common, max_length=1000)


OWNER_BULK_MAX = 5000  # contacts per "Assign an owner": the confirmation page carries their ids


class AssignOwnerForm(forms.Form):
    owner: forms.ModelChoiceField[Any] = forms.ModelChoiceField(
        queryset=User.objects.none(), required=False, empty_label="(no owner)",
        help_text="Empty: the selected contacts lose their owner.")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        owner: Any = self.fields["owner"]
        owner.queryset = sales_users()


@admin.register(Contact)
class ContactAdmin(ExportMixin, admin.ModelAdmin):
    form = ContactAdminForm
    resource_classes = [ContactResource]
    list_display = [
        "email", "first_name", "last_name", "company", "lifecycle_stage", "consent_status", "is_test", "created_at",
    ]
    list_filter = ["lifecycle_stage", "consent_status", "is_test", "country", "tags", "created_at"]
    search_fields = ["email", "first_name", "last_name", "company"]
    readonly_fields = ["created_at", "updated_at"]
    autocomplete_fields = ["tags", "lists"]
    show_full_result_count = False
    paginator = EstimatedCountPaginator
    list_per_page = 50
    date_hierarchy = None
    actions = ["assign_owner", "erase_contacts"]
    change_form_template = "admin/contacts/contact/change_form.html"
    fieldsets = [
        (None, {"fields": ["email", ("first_name", "last_name"), ("company", "job_title"), ("phone", "country")]}),
        ("Lifecycle", {"fields": ["lifecycle_stage", "owner", "is_test"]}),
        ("Consent", {"fields": ["consent_status", "consent_source", "consent_at"]}),
        ("Tags and lists", {"fields": ["tags", "lists"]}),
        ("Custom attributes", {"fields": ["attributes"], "classes": ["collapse"]}),
        ("History", {"fields": ["created_at", "updated_at"]}),
    ]

    @replica_reads  # the CSV export reads every selected contact: the replica when there is one (issue 22)
    def get_export_data(self, *args: Any, **kwargs: Any) -> Any:
        return super().get_export_data(*args, **kwargs)

    def _custom_fields(self, request: HttpRequest) -> list[CustomField]:
        if not hasattr(request, "_leadflow_custom_fields"):
            request._leadflow_custom_fields = list(CustomField.objects.order_by("key"))  # type: ignore[attr-defined]
        return request._leadflow_custom_fields  # type: ignore[attr-defined]

    def get_fieldsets(self, request: HttpRequest, obj: Contact | None = None) -> Any:
        # Custom fields as typed inputs; their JSON folded away as the advanced view.
        specs = self._custom_fields(request)
        fieldsets = [(name, dict(options)) for name, options in super().get_fieldsets(request, obj)]
        at = next(i for i, (name, _) in enumerate(fieldsets) if name == "Custom attributes")
        fieldsets[at] = ("Advanced: custom attributes as JSON", fieldsets[at][1])
        if specs:
            fieldsets.insert(at, ("Custom fields", {"fields": [ATTR_FIELD + spec.key for spec in specs]}))
        return fieldsets

    def get_form(self, request: HttpRequest, obj: Any = None, change: bool = False, **kwargs: Any) -> Any:
        specs = self._custom_fields(request)
        declared: dict[str, Any] = {ATTR_FIELD + spec.key: typed_field(spec) for spec in specs}
        kwargs["form"] = type("ContactAdminForm", (self.form,), {**declared, "custom_fields": specs})
        return super().get_form(request, obj, change, **kwargs)

    def get_urls(self) -> list[URLPattern]:
        export_data = path(
            "<path:object_id>/export-data/", self.admin_site.admin_view(self.export_data_view),
            name="contacts_contact_export_data",
        )
        return [export_data, *super().get_urls()]

    def change_view(self, request: HttpRequest, object_id: str, form_url: str = "",
                    extra_context: dict[str, Any] | None = None) -> HttpResponse:
        extra = dict(extra_context or {})
        if self.has_view_permission(request):
            extra["export_data_url"] = reverse("admin:contacts_contact_export_data", args=[object_id])
            contact = self.get_object(request, unquote(object_id))
            if contact is not None:  # score and why, timeline, segments, workflows, CRM (contacts/overview.py)
                extra["overview"] = contact_overview(contact=contact)
        return super().change_view(request, object_id, form_url, extra)

    def export_data_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """Everything held about one contact as a JSON download (GDPR access request)."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        contact = self.get_object(request, unquote(object_id))
        if contact is None:
            raise Http404("No such contact.")
        audit_record(actor=request.user, action="contact.data_exported", target=contact)
        response = JsonResponse(contact_export_data(contact=contact), json_dumps_params={"indent": 2})
        response["Content-Disposition"] = f'attachment; filename="contact-{contact.pk}.json"'
        return response

    def save_model(self, request: HttpRequest, obj: Contact, form: Any, change: bool) -> None:
        owner = obj.owner
        if change and "owner" in form.changed_data:
            obj.owner_id = form.initial.get("owner")  # the service changes it, with its audit entry
        previous_consent = form.initial.get("consent_status", "unknown") if change else "unknown"
        super().save_model(request, obj, form, change)
        # A consent change typed here goes into the consent history, with who made it (issue 20).
        consent_change_note(contact=obj, previous_status=previous_consent, source="admin",
                            actor=request.user.get_username())
        if change and "owner" in form.changed_data:
            contacts_owner_set(contact_ids=[obj.pk], owner=owner, actor=request.user)
            obj.refresh_from_db(fields=["owner"])
        # Fit scoring and segment membership follow the edit (the job leaves after COMMIT).
        get_queue("events").enqueue("contacts.tasks_events.contacts_changed", [obj.pk])

    @admin.action(description="Assign an owner", permissions=["change"])
    def assign_owner(self, request: HttpRequest, queryset: QuerySet[Contact]) -> TemplateResponse | None:
        if queryset.count() > OWNER_BULK_MAX:
            self.message_user(request, f"Assign at most {OWNER_BULK_MAX} contacts at a time.", messages.ERROR)
            return None
        form = AssignOwnerForm(request.POST if request.POST.get("post") == "yes" else None)
        if form.is_bound and form.is_valid():
            owner = form.cleaned_data["owner"]
            changed = contacts_owner_set(contact_ids=list(queryset.values_list("id", flat=True)), owner=owner,
                                         actor=request.user)
            self.message_user(request, f"{changed} contact(s) now owned by {owner or 'nobody'}.", messages.SUCCESS)
            return None
        request.current_app = self.admin_site.name
        return TemplateResponse(request, "admin/contacts/contact/assign_owner.html", {
            **self.admin_site.each_context(request), "title": "Assign an owner", "opts": self.opts, "form": form,
            "contacts": queryset.select_related("owner")[:50], "count": queryset.count(),
            "ids": list(queryset.values_list("id", flat=True)[:OWNER_BULK_MAX]),
            "action_checkbox_name": ACTION_CHECKBOX_NAME,
        })

    def delete_model(self, request: HttpRequest, obj: Contact) -> None:
        # Deleting a contact is erasing it: same cascade, and the audit entry the plain delete lacks.
        contact_erase(contact=obj, actor=request.user)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Contact]) -> None:
        for contact in queryset:
            contact_erase(contact=contact, actor=request.user)

    @admin.action(description="Erase (GDPR)", permissions=["delete"])
    def erase_contacts(self, request: HttpRequest, queryset: QuerySet[Contact]) -> TemplateResponse | None:
        count = queryset.count()
        if count > ERASE_MAX:
            self.message_user(request, f"{count} contacts selected; erase at most {ERASE_MAX} at a time.",
                              messages.ERROR)
            return None
        if request.POST.get("post") != "yes":
            return self._erase_confirmation(request, queryset, count)
        erased = 0
        for contact in list(queryset):
            contact_erase(contact=contact, actor=request.user)
            erased += 1
        self.message_user(request, f"Erased {erased} contact{'s' if erased != 1 else ''} and everything that "
                                   "named them; the audit log records the erasure without personal data.",
                          messages.SUCCESS)
        return None

    def _erase_confirmation(self, request: HttpRequest, queryset: QuerySet[Contact], count: int) -> TemplateResponse:
        contacts = queryset.annotate(tag_count=Count("tags", distinct=True), list_count=Count("lists", distinct=True))
        request.current_app = self.admin_site.name
        return TemplateResponse(request, "admin/contacts/contact/erase_confirmation.html", {
            **self.admin_site.each_context(request),
            "title": "Erase contacts (GDPR)",
            "opts": self.opts,
            "contacts": contacts,
            "count": count,
            "action_checkbox_name": ACTION_CHECKBOX_NAME,
            "media": self.media,
        })


@admin.register(CustomField)
class CustomFieldAdmin(admin.ModelAdmin):
    list_display = ["key", "label", "field_type", "required", "created_at"]
    list_filter = ["field_type", "required"]
    search_fields = ["key", "label"]
    readonly_fields = ["created_at"]


@admin.register(Tag)
class TagAdmin(admin.ModelAdmin):
    list_display = ["name", "created_at"]
    search_fields = ["name"]
    readonly_fields = ["created_at"]


@admin.register(ContactList)
class ContactListAdmin(admin.ModelAdmin):
    list_display = ["name", "description", "created_at"]
    search_fields = ["name", "description"]
    readonly_fields = ["created_at"]


@admin.register(Event)
class EventAdmin(ReadOnlyAdmin):
    """Events are written by the API, tracking, the CRM and the pipeline; here they are read, and
    followed by correlation id (exact match) to the enrollments, messages and CRM rows they caused."""

    list_display = ["id", "contact", "event_type", "source", "occurred_at", "processed_at", "correlation_id"]
    list_filter = ["event_type", "source"]
    search_fields = ["=id", "=correlation_id", "=contact__email"]  # the search box; see get_search_results
    search_help_text = "An event id, a contact's email address or a correlation id (exact)."
    list_select_related = ["contact"]
    raw_id_fields = ["contact"]
    readonly_fields = [f.name for f in Event._meta.fields]

    def get_search_results(self, request: HttpRequest, queryset: QuerySet[Event],
                           search_term: str) -> tuple[QuerySet[Event], bool]:
        """One exact lookup by the term's shape: Django's `=field` compares UPPER(column), which no
        index serves, so every search scanned millions of events. Digits: the id (primary key); an
        address: the contact's events (unique email, then event_contact_type_idx); anything else:
        the correlation id (not indexed: a scan, as indexing it would cost every event insert)."""
        term = search_term.strip()
        if not term:
            return queryset, False
        if term.isascii() and term.isdigit() and len(term) <= 18:  # fits a bigint
            by_id = queryset.filter(pk=int(term))
            return (by_id if by_id.exists() else queryset.filter(correlation_id=term)), False
        if "@" in term:
            return queryset.filter(contact__email=term.lower()), False
        return queryset.filter(correlation_id=term), False


@admin.register(AuditEntry)
class AuditEntryAdmin(ReadOnlyAdmin):
    """The audit trail is written by core.audit only: nobody adds, edits or deletes entries here."""

    list_display = ["at", "actor_label", "action", "target_type", "target_id"]
    list_filter = ["action", "target_type"]
    search_fields = ["action", "actor_label", "=target_id"]
    readonly_fields = ["at", "actor", "actor_label", "action", "target_type", "target_id", "data"]


# --- Import jobs: reading the file for the wizard ------------------------------------------------------


@dataclass(frozen=True)
class FileSample:
    encoding: str
    delimiter: str
    header: list[str]
    rows: list[tuple[int, list[str]]]


def read_sample(job: ImportJob, *, limit: int = PREVIEW_ROWS) -> FileSample:
    """Header and first rows, independent of any mapping. Raises ImportFileError."""
    try:
        file_path = Path(job.file.path)
        fmt = detect_format(file_path, encoding=job.encoding, delimiter=job.delimiter)
        with CsvSource(file_path, fmt) as source:
            return FileSample(fmt.encoding, fmt.delimiter, source.header, list(islice(source.rows(), limit)))
    except FileNotFoundError:
        raise ImportFileError("The uploaded file is no longer on the server; upload it again.") from None


ENCODING_CHOICES = [
    ("", "Detect automatically"),
    ("utf-8", "UTF-8"),
    ("cp1252", "Windows-1252 (Excel on Windows)"),
    ("latin-1", "Latin-1 (ISO 8859-1)"),
]
DELIMITERS = {"comma": ",", "semicolon": ";", "tab": "\t"}
DELIMITER_CHOICES = [("", "Detect automatically"), ("comma", "Comma ( , )"), ("semicolon", "Semicolon ( ; )"),
                     ("tab", "Tab")]
ENCODING_LABELS = {"utf-8": "UTF-8", "utf-8-sig": "UTF-8", "utf-16": "UTF-16", "cp1252": "Windows-1252",
                   "latin-1": "Latin-1"}
DELIMITER_LABELS = {",": "commas", ";": "semicolons", "\t": "tabs", "|": "vertical bars ( | )"}
OUTCOME_LABELS = {"create": "New contact", "update": "Updates a contact", "reject": "Rejected",
                  "duplicate": "Duplicate"}


class ImportUploadForm(forms.Form):
    required_css_class = "required"

    file = forms.FileField(
        label="CSV file",
        help_text="A .csv export from a spreadsheet, CRM or email tool, with a header row. "
                  "You choose which column goes where in the next step.",
    )
    on_existing = forms.ChoiceField(
        label="Contacts that already exist", choices=ImportJob.OnExisting.choices,
        initial=ImportJob.OnExisting.UPDATE, help_text="Contacts are matched by email address.",
    )
    tag = forms.CharField(
        label="Tag everyone in the file", required=False, max_length=Tag._meta.get_field("name").max_length,
        help_text="Optional. The tag is created if it does not exist yet.",
    )
    add_to_list = forms.ModelChoiceField(
        label="Add everyone to list", queryset=ContactList.objects.all(), required=False, empty_label="(no list)",
    )
    create_fields = forms.BooleanField(
        label="Create custom fields for unknown columns", required=False, initial=True,
        help_text="Columns that match no contact field become new text custom fields.",
    )
    encoding = forms.ChoiceField(
        label="Character encoding", choices=ENCODING_CHOICES, required=False,
        help_text="Leave on automatic unless accented letters come out wrong in the preview.",
    )
    delimiter = forms.ChoiceField(label="Column separator", choices=DELIMITER_CHOICES, required=False)
    # Issue 20: what the file's contacts consented to, for rows without a consent value (consent/imports.py).
    consent_basis = forms.ChoiceField(
        label="Consent of rows without one", required=False, choices=[
            ("", "None: only a mapped consent column counts (others get no marketing email)"),
            ("granted", "Everyone in the file consented: say where and when below"),
            ("confirm", "Send a confirmation email (double opt-in) to those without consent")],
        help_text="Marketing email goes only to contacts whose consent is granted.")
    consent_source = forms.CharField(label="Where they consented", required=False, max_length=200,
                                     help_text='With "everyone consented": the proof, e.g. "trade fair badge scan"')
    consent_date = forms.DateField(label="When they consented", required=False, help_text="YYYY-MM-DD")

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        try:
            consent_basis_check(basis=data.get("consent_basis") or "", source=data.get("consent_source") or "",
                                at="")
        except ValueError as exc:
            raise forms.ValidationError({"consent_source": str(exc).replace("--consent-basis granted",
                                                                            "Everyone consented")}) from None
        return data

    def clean_file(self) -> UploadedFile:
        upload: UploadedFile = self.cleaned_data["file"]
        limit = int(settings.IMPORT_MAX_BYTES)
        if (upload.size or 0) > limit:
            raise ValidationError(
                f"This file is {filesizeformat(upload.size or 0)}; the largest file you can import is "
                f"{filesizeformat(limit)}. Split it into smaller files and import them one after the other."
            )
        return upload

    def clean_tag(self) -> str:
        return str(self.cleaned_data["tag"]).strip()


Choices = list[tuple[str, Any]]


class ImportMappingForm(forms.Form):
    """One select per CSV column: ignore, a contact field, a custom field, or a new custom field."""

    def __init__(self, *args: Any, header: list[str], choices: list[Choices], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.header = header
        for index, (name, column_choices) in enumerate(zip(header, choices, strict=True)):
            self.fields[f"col_{index}"] = forms.ChoiceField(label=name, choices=column_choices, required=False)

    def mapping(self) -> dict[str, str]:
        return {name: self.cleaned_data[f"col_{index}"] for index, name in enumerate(self.header)}


def target_choices(header: list[str], *, create_fields: bool, selected: dict[str, str]) -> list[Choices]:
    """The targets each column may map to, grouped for the <select>s."""
    fields: Choices = [(name, _field_label(name)) for name in IMPORTABLE_FIELDS]
    custom = {ATTR_PREFIX + f.key: f"{f.label} ({f.key})" for f in CustomField.objects.only("key", "label")}
    builtin = contact_field_names()
    result: list[Choices] = []
    for name in header:
        column: Choices = [("", "— Ignore this column —"), ("Contact fields", fields)]
        if custom:
            column.append(("Custom fields", list(custom.items())))
        key = attribute_key(name)
        offered = {value for value, _ in fields} | set(custom)
        if create_fields and ATTR_PREFIX + key not in custom and key not in builtin \
                and normalise_header(name) not in ALIASES:
            column.append(("New custom field", [(ATTR_PREFIX + key, f"New field “{key}”")]))
            offered.add(ATTR_PREFIX + key)
        current = selected.get(name, "")
        if current and current not in offered:
            column.append(("Other", [(current, current)]))
        result.append(column)
    return result


def _preview(job: ImportJob, sample: FileSample, mapping: dict[str, str] | None) -> tuple[dict[str, Any] | None, str]:
    """(import_preview's answer, "") or (None, why there is no preview)."""
    if mapping is None:
        return None, "Choose a target from the list for every column."
    try:
        return import_preview(path=Path(job.file.path), mapping=mapping, create_fields=job.create_fields,
                              encoding=sample.encoding, delimiter=sample.delimiter, limit=PREVIEW_ROWS,
                              on_existing=job.on_existing,
                              consent_basis=(job.consent_basis or {}).get("basis", "")), ""
    except ImportFileError as exc:
        return None, str(exc)


def _field_label(name: str) -> str:
    field = Contact._meta.get_field(name)
    return capfirst(str(field.verbose_name)) if isinstance(field, models.Field) else name


def _mapping_target_label(target: str) -> str:
    if not target:
        return "ignored"
    if target.startswith(ATTR_PREFIX):
        return f"custom field “{target[len(ATTR_PREFIX):]}”"
    return _field_label(target) if target in IMPORTABLE_FIELDS else target


def _target_label(target: str, choices: Choices) -> str:
    if not target:
        return "ignored"
    for value, label in choices:
        if isinstance(label, list):
            found = dict(label).get(target)
            if found:
                return str(found)
        elif value == target:
            return str(label)
    return target


def _moment(value: dt.datetime | str | None) -> str:
    moment = parse_datetime(value) if isinstance(value, str) else value
    if moment is None:
        return ""
    return timezone.localtime(moment).strftime("%Y-%m-%d %H:%M:%S") if timezone.is_aware(moment) else str(moment)


# --- Import jobs: the admin --------------------------------------------------------------------------

IMPORT_FILE_FIELDS = ("original_name", "size_display", "format_display", "created_by", "created_at")
IMPORT_OPTION_FIELDS = ("on_existing", "create_fields", "tag", "add_to_list", "mapping_display")


@admin.register(ImportJob)
class ImportJobAdmin(admin.ModelAdmin):
    """Imports are created by the wizard and never edited: the detail page is read-only."""

    list_display = ["file_display", "status", "progress_display", "counts_display", "created_by",
                    "created_at"]
    list_filter = ["status", "created_at"]
    search_fields = ["original_name"]
    list_select_related = ["created_by"]
    show_full_result_count = False
    paginator = EstimatedCountPaginator
    change_form_template = TEMPLATES + "change_form.html"
    fieldsets = [("File", {"fields": IMPORT_FILE_FIELDS}), ("Options", {"fields": IMPORT_OPTION_FIELDS})]
    readonly_fields = (*IMPORT_FILE_FIELDS, *IMPORT_OPTION_FIELDS)

    def has_change_permission(self, request: HttpRequest, obj: ImportJob | None = None) -> bool:
        return bool(request.user.is_active and request.user.is_superuser)

    def has_delete_permission(self, request: HttpRequest, obj: ImportJob | None = None) -> bool:
        return bool(request.user.is_active and request.user.is_superuser)

    @admin.display(description="Progress")
    def progress_display(self, job: ImportJob) -> str:
        return f"{job.progress} %"

    @admin.display(description="File", ordering="original_name")
    def file_display(self, job: ImportJob) -> str:
        return job.original_name

    @admin.display(description="Result")
    def counts_display(self, job: ImportJob) -> str:
        counts = [(job.created, "created"), (job.updated, "updated"), (job.skipped, "skipped"),
                  (job.rejected, "rejected"), (job.duplicates, "duplicates")]
        shown = [f"{n} {label}" for n, label in counts if n or label in ("created", "updated", "rejected")]
        return ", ".join(shown) if job.status == ImportJob.Status.COMPLETED else "—"

    @admin.display(description="File size")
    def size_display(self, job: ImportJob) -> str:
        return filesizeformat(job.file_size)

    @admin.display(description="Read as")
    def format_display(self, job: ImportJob) -> str:
        encoding = ENCODING_LABELS.get(job.encoding, job.encoding) or "encoding detected automatically"
        delimiter = DELIMITER_LABELS.get(job.delimiter, job.delimiter)
        separator = f"columns separated by {delimiter}" if delimiter else "separator detected automatically"
        return f"{encoding}, {separator}"

    @admin.display(description="Column mapping")
    def mapping_display(self, job: ImportJob) -> str:
        if not job.mapping:
            return "Not chosen yet"
        return format_html(
            '<table class="import-mapping-summary"><tbody>{}</tbody></table>',
            format_html_join("", "<tr><td>{}</td><td>→ {}</td></tr>",
                             ((column, _mapping_target_label(target)) for column, target in job.mapping.items())),
        )

    # URLs ----------------------------------------------------------------------------------------

    def get_urls(self) -> list[URLPattern]:
        def view(func: Any, suffix: str) -> URLPattern:
            return path(f"<path:object_id>/{suffix}/", self.admin_site.admin_view(func),
                        name=f"contacts_importjob_{suffix.replace('-', '_')}")

        return [
            view(self.mapping_view, "mapping"),
            view(self.status_view, "status"),
            view(self.error_report_view, "error-report"),
            *super().get_urls(),
        ]

    def _job(self, request: HttpRequest, object_id: str) -> ImportJob:
        job = self.get_object(request, unquote(object_id))
        if job is None:
            raise Http404("No such import.")
        return job

    def _render(self, request: HttpRequest, template: str, context: dict[str, Any]) -> TemplateResponse:
        request.current_app = self.admin_site.name
        return TemplateResponse(request, TEMPLATES + template, {
            **self.admin_site.each_context(request), "opts": self.opts,
            "has_view_permission": self.has_view_permission(request), **context,
        })

    # Step 1: upload -------------------------------------------------------------------------------

    def add_view(self, request: HttpRequest, form_url: str = "",
                 extra_context: dict[str, Any] | None = None) -> HttpResponse:
        if not self.has_add_permission(request):
            raise PermissionDenied
        form = ImportUploadForm(request.POST, request.FILES) if request.method == "POST" else ImportUploadForm()
        if form.is_valid():
            data = form.cleaned_data
            user = request.user if isinstance(request.user, User) else None
            job = import_job_create(
                upload=data["file"], created_by=user, on_existing=data["on_existing"],
                tag_name=data["tag"], add_to_list=data["add_to_list"], create_fields=data["create_fields"],
                encoding=data["encoding"], delimiter=DELIMITERS.get(data["delimiter"], ""),
                consent_basis={"basis": data["consent_basis"], "source": data["consent_source"],
                               "at": data["consent_date"].isoformat() if data["consent_date"] else ""}
                if data["consent_basis"] else None,
            )
            return redirect("admin:contacts_importjob_mapping", job.pk)
        return self._render(request, "upload.html", {
            "title": "Import contacts from a CSV file", "form": form,
            "max_size": filesizeformat(int(settings.IMPORT_MAX_BYTES)), **(extra_context or {}),
        })

    # Step 2: mapping and preview ------------------------------------------------------------------

    def mapping_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        if not self.has_add_permission(request):
            raise PermissionDenied
        job = self._job(request, object_id)
        job_url = reverse("admin:contacts_importjob_change", args=[job.pk])
        if job.status != ImportJob.Status.PENDING:
            self.message_user(request, f"This import is {job.get_status_display().lower()}; its columns can no "
                                       "longer be changed.", messages.WARNING)
            return redirect(job_url)
        context: dict[str, Any] = {"title": f"Map the columns of {job.original_name}", "job": job, "job_url": job_url}
        try:
            sample = read_sample(job)
        except ImportFileError as exc:
            import_job_fail(job=job, message=str(exc))
            return self._render(request, "mapping.html", {**context, "file_error": str(exc)})

        initial = job.mapping if set(job.mapping) == set(sample.header) else suggest_mapping(
            sample.header, load_specs(), create_fields=job.create_fields
        )
        bound = request.method == "POST"
        selected = {n: str(request.POST.get(f"col_{i}", "")) for i, n in enumerate(sample.header)} if bound else initial
        choices = target_choices(sample.header, create_fields=job.create_fields, selected=initial)
        form = ImportMappingForm(request.POST if bound else None, header=sample.header, choices=choices,
                                 initial={f"col_{i}": initial.get(n, "") for i, n in enumerate(sample.header)})
        mapping = form.mapping() if bound and form.is_valid() else (None if bound else initial)
        preview, error = _preview(job, sample, mapping)
        if bound and "_start" in request.POST and preview is not None and mapping is not None:
            return self._start(request, job, mapping, job_url)
        return self._render(request, "mapping.html", {
            **context, **self._mapping_context(sample, form, choices, selected, preview), "error": error,
        })

    def _start(self, request: HttpRequest, job: ImportJob, mapping: dict[str, str], job_url: str) -> HttpResponse:
        try:
            import_job_start(job=job, mapping=mapping)
        except ValueError as exc:
            self.message_user(request, str(exc), messages.WARNING)
        else:
            self.message_user(request, f"Import of {job.original_name} started. This page updates as it runs.",
                              messages.SUCCESS)
        return redirect(job_url)

    def _mapping_context(self, sample: FileSample, form: ImportMappingForm, choices: list[Choices],
                         selected: dict[str, str], preview: dict[str, Any] | None) -> dict[str, Any]:
        width = len(sample.header)
        columns = []
        for index, name in enumerate(sample.header):
            examples = [cells[index].strip() for _, cells in sample.rows if index < len(cells) and cells[index].strip()]
            columns.append({"name": name, "field": form[f"col_{index}"], "examples": examples[:3],
                            "target": selected.get(name, ""),
                            "target_label": _target_label(selected.get(name, ""), choices[index])})
        rows = []
        for row in (preview or {}).get("rows", []):
            values = list(row["cells"]) + [""] * (width - len(row["cells"]))
            cells = [{"value": value, "ignored": not column["target"]} for value, column in zip(values, columns,
                                                                                               strict=True)]
            rows.append({**row, "cells": cells, "label": OUTCOME_LABELS.get(row["outcome"], row["outcome"])})
        outcomes = Counter(row["outcome"] for row in rows)
        return {
            "columns": columns,
            "preview": preview,
            "preview_rows": rows,
            "outcome_counts": [(o, OUTCOME_LABELS[o], outcomes[o]) for o in OUTCOME_LABELS if outcomes[o]],
            "new_fields": (preview or {}).get("new_fields", []),
            "encoding_label": ENCODING_LABELS.get(sample.encoding, sample.encoding),
            "delimiter_label": DELIMITER_LABELS.get(sample.delimiter, sample.delimiter),
            "column_count": width + 3,
        }

    # Step 3: the job page, its status feed and its error report ---------------------------------

    def change_view(self, request: HttpRequest, object_id: str, form_url: str = "",
                    extra_context: dict[str, Any] | None = None) -> HttpResponse:
        if request.method == "POST":
            raise PermissionDenied  # read-only even for superusers: a save would overwrite a running job's counts
        extra = dict(extra_context or {})
        job = self.get_object(request, unquote(object_id))
        if job is not None and self.has_view_permission(request, job):
            pending = job.status == ImportJob.Status.PENDING
            extra.update(
                state=self._state(job),
                status_url=reverse("admin:contacts_importjob_status", args=[job.pk]),
                poll=job.status in (ImportJob.Status.QUEUED, ImportJob.Status.RUNNING),
                mapping_url=reverse("admin:contacts_importjob_mapping", args=[job.pk])
                if pending and self.has_add_permission(request) else "",
                show_save=False, show_save_and_continue=False, show_save_and_add_another=False,
            )
        return super().change_view(request, object_id, form_url, extra)

    def status_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        if not self.has_view_permission(request):
            raise PermissionDenied
        response = JsonResponse(self._state(self._job(request, object_id)))
        response["Cache-Control"] = "no-store"
        return response

    def error_report_view(self, request: HttpRequest, object_id: str) -> HttpResponseBase:
        if not self.has_view_permission(request):
            raise PermissionDenied
        job = self._job(request, object_id)
        if not job.error_report:
            raise Http404("This import has no error report.")
        try:
            report = job.error_report.open("rb")
        except FileNotFoundError:
            raise Http404("The error report file is missing.") from None
        filename = f"{Path(job.original_name).stem or 'import'}-errors.csv"
        return FileResponse(report, as_attachment=True, filename=filename, content_type="text/csv; charset=utf-8")

    def _state(self, job: ImportJob) -> dict[str, Any]:
        """What the job page shows and its script polls for."""
        report_url = reverse("admin:contacts_importjob_error_report", args=[job.pk]) \
            if job.is_finished and job.error_report else None
        return {
            "status": job.status,
            "status_label": job.get_status_display(),
            "finished": job.is_finished,
            "message": job.message,
            "progress": job.progress,
            "rows_read": job.rows_read,
            "created": job.created,
            "updated": job.updated,
            "skipped": job.skipped,
            "rejected": job.rejected,
            "duplicates": job.duplicates,
            "started_at": _moment(job.started_at),
            "finished_at": _moment(job.finished_at),
            "error_report_url": report_url,
            "log": [{"at": _moment(entry.get("at")), "message": entry.get("message", "")} for entry in job.log],
        }


# Registered from their own modules (kept apart so the admin for each area stays readable).
from contacts import admin_api, admin_segments  # noqa: E402,F401


@admin.register(LeadRoutingRule)
class LeadRoutingRuleAdmin(admin.ModelAdmin):
    list_display = ["name", "position", "is_active", "match", "owner_list"]
    list_editable = ["position", "is_active"]
    filter_horizontal = ["owners"]
    autocomplete_fields = ["segment"]
    fieldsets = [
        (None, {"fields": ["name", "position", "is_active"]}),
        ("Which leads", {"fields": ["match", "countries", "segment", "company_contains"],
                         "description": "Tried when a lead becomes an MQL and has no owner; the first active "
                                        "rule that matches gives it to its owners in turn."}),
        ("Who takes them", {"fields": ["owners"]}),
    ]

    def get_form(self, request: HttpRequest, obj: Any = None, change: bool = False, **kwargs: Any) -> Any:
        form = super().get_form(request, obj, change, **kwargs)
        owners: Any = form.base_fields["owners"]
        owners.queryset = sales_users()
        return form

    @admin.display(description="Owners")
    def owner_list(self, obj: LeadRoutingRule) -> str:
        return ", ".join(user.get_username() for user in obj.owners.all())

    def get_queryset(self, request: HttpRequest) -> QuerySet[LeadRoutingRule]:
        return super().get_queryset(request).prefetch_related("owners")
