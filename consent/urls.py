"""Public consent pages (mounted at /f/): signup forms and double opt-in confirmation."""

from django.urls import path

from consent import forms_public

app_name = "consent"
urlpatterns = [
    path("confirm/<str:token>", forms_public.confirm_view, name="confirm"),
    path("<slug:slug>/", forms_public.signup_view, name="form"),
]
