"""Public email endpoints: open pixel, click redirect, unsubscribe (mounted at /e/)."""

from django.urls import URLPattern

app_name = "campaigns"
urlpatterns: list[URLPattern] = []
