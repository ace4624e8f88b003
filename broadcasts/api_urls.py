"""Broadcast API, mounted at /api/v1/ (config/urls.py)."""

from django.urls import path

from broadcasts import api

app_name = "broadcasts_api"
urlpatterns = [
    path("campaigns/<str:key>/send", api.send, name="send"),
]
