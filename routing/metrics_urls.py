"""`/metrics` (mounted by project/urls.py, which names no app's code)."""

from __future__ import annotations

from django.urls import path

from routing.metrics import metrics_view

urlpatterns = [path("", metrics_view, name="metrics")]
