"""Public email endpoints: open pixel, click redirect, unsubscribe (mounted at /e/)."""

from django.urls import path

from campaigns import views

app_name = "campaigns"
urlpatterns = [
    path("o/<str:token>.gif", views.open_pixel, name="open"),
    path("c/<str:token>", views.click, name="click"),
    path("u/<str:token>", views.unsubscribe, name="unsubscribe"),
]
