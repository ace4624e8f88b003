"""Inbound CRM webhooks, mounted at /api/v1/crm/."""

from django.urls import URLPattern

app_name = "crm"
urlpatterns: list[URLPattern] = []
