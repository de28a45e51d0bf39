from __future__ import annotations

from django.contrib import admin
from django.urls import include, path

from project.health import healthz

urlpatterns = [
    path("healthz", healthz, name="healthz"),
    path("metrics", include("routing.metrics_urls")),
    path("admin/", admin.site.urls),
    path("api/v1/", include("routing.urls")),
    path("checklist/", include("checklist.urls")),
]
