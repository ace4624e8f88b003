from typing import Any

from import_export import resources

from contacts.models import Contact
from core.utils import spreadsheet_safe


class ContactResource(resources.ModelResource):
    """Admin export (CSV, XLSX and every other format offered).

    Each text cell goes through core.utils.spreadsheet_safe, the same escape as the lead export:
    django-import-export's own IMPORT_EXPORT_ESCAPE_FORMULAE_ON_EXPORT only strips one leading
    "=", so "==HYPERLINK(...)" still ran, and +, -, @, tab and CR were left as they were.
    Native values (numbers, dates, booleans in XLSX) are not formulas and stay as they are.
    """

    class Meta:
        model = Contact
        fields = (
            "id", "email", "first_name", "last_name", "company", "job_title", "phone", "country",
            "lifecycle_stage", "consent_status", "consent_source", "consent_at", "is_test",
            "attributes", "created_at", "updated_at",
        )
        export_order = fields

    def export_resource(self, instance: Any, selected_fields: Any = None, **kwargs: Any) -> list[Any]:
        row = super().export_resource(instance, selected_fields, **kwargs)
        return [spreadsheet_safe(cell) if isinstance(cell, str) else cell for cell in row]
