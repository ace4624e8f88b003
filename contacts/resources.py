from import_export import resources

from contacts.models import Contact


class ContactResource(resources.ModelResource):
    """Admin export (CSV/XLSX). Formula escaping is on globally (settings)."""

    class Meta:
        model = Contact
        fields = (
            "id", "email", "first_name", "last_name", "company", "job_title", "phone", "country",
            "lifecycle_stage", "consent_status", "consent_source", "consent_at", "is_test",
            "attributes", "created_at", "updated_at",
        )
        export_order = fields
