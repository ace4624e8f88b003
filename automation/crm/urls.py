"""Inbound CRM webhooks, mounted at /api/v1/crm/."""

from django.urls import URLPattern, path

from automation.crm import views

app_name = "crm"
urlpatterns: list[URLPattern] = [
    path("<int:connection_id>/status", views.inbound_status, name="inbound-status"),
]
