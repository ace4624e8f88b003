"""Admin for segments (imported by contacts/admin.py)."""
