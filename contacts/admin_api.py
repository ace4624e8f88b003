"""Admin for API keys (imported by contacts/admin.py)."""
