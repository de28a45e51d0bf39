from __future__ import annotations

from django.contrib.auth import views as auth_views
from django.urls import path

from checklist import views

app_name = "checklist"

urlpatterns = [
    path("", views.index, name="index"),
    path(
        "login/",
        auth_views.LoginView.as_view(template_name="checklist/login.html"),
        name="login",
    ),
    path("logout/", auth_views.LogoutView.as_view(next_page="checklist:login"), name="logout"),
    path("<slug:slug>/", views.checklist_detail, name="detail"),
    path("<slug:slug>/report/", views.report, name="report"),
    path("<slug:slug>/export.csv", views.export_csv, name="export"),
    path("<slug:slug>/start/", views.set_start, name="start"),
    path("<slug:slug>/evidence/", views.measure_evidence, name="measure"),
    path("<slug:slug>/drill/", views.run_drill, name="drill"),
    path("<slug:slug>/items/<uuid:code>/", views.item_detail, name="item"),
    path("<slug:slug>/items/<uuid:code>/change/", views.change_item, name="change_item"),
    path("<slug:slug>/roles/<uuid:code>/sign/", views.sign, name="sign"),
    path("<slug:slug>/sign-offs/<uuid:code>/revoke/", views.revoke, name="revoke"),
]
