from django.apps import AppConfig


class ScoringConfig(AppConfig):
    """Scoring rules, the score ledger, grades and the sales lead views (issue: scoring)."""

    name = "scoring"
