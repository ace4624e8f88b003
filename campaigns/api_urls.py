"""Authenticated delivery API, mounted at /api/v1/: bounce and complaint webhooks."""

from django.urls import path

from campaigns import api

app_name = "campaigns_api"
urlpatterns = [
    path("bounces", api.bounces, name="bounces"),
]
