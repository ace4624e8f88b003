from django.contrib import admin
from import_export.admin import ExportMixin

from contacts.models import Contact
from contacts.resources import ContactResource
from core.admin_utils import EstimatedCountPaginator


@admin.register(Contact)
class ContactAdmin(ExportMixin, admin.ModelAdmin):
    resource_classes = [ContactResource]
    list_display = [
        "email", "first_name", "last_name", "company", "lifecycle_stage", "consent_status", "is_test", "created_at",
    ]
    list_filter = ["lifecycle_stage", "consent_status", "is_test", "country", "created_at"]
    search_fields = ["email", "first_name", "last_name", "company"]
    readonly_fields = ["created_at", "updated_at"]
    show_full_result_count = False
    paginator = EstimatedCountPaginator
    list_per_page = 50
    date_hierarchy = None
    fieldsets = [
        (None, {"fields": ["email", ("first_name", "last_name"), ("company", "job_title"), ("phone", "country")]}),
        ("Lifecycle", {"fields": ["lifecycle_stage", "is_test"]}),
        ("Consent", {"fields": ["consent_status", "consent_source", "consent_at"]}),
        ("Custom attributes", {"fields": ["attributes"]}),
        ("History", {"fields": ["created_at", "updated_at"]}),
    ]
