from django.urls import URLPattern, path

from scoring import views

app_name = "scoring"
urlpatterns: list[URLPattern] = [
    path("", views.lead_list, name="lead_list"),
    path("export.csv", views.lead_export, name="lead_export"),
    path("<int:contact_id>/", views.lead_detail, name="lead_detail"),
]
