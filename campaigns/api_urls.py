"""Authenticated delivery API, mounted at /api/v1/: bounce and complaint webhooks."""

from django.urls import URLPattern

app_name = "campaigns_api"
urlpatterns: list[URLPattern] = []
