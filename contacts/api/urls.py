from django.urls import URLPattern, path

from contacts.api import views

app_name = "api"
urlpatterns: list[URLPattern] = [
    path("events", views.events, name="events"),
    path("contacts", views.contacts, name="contacts"),
    path("contacts/<str:email>", views.contact_detail, name="contact"),
    path("openapi.json", views.openapi, name="openapi"),
]
