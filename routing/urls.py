from __future__ import annotations

from django.urls import path

from routing import api
from routing.quality import api as quality_api

# Each view names its scope (`required_scope`); tests/routing/test_scopes.py
# fails for a URL here without a row in its table.
urlpatterns = [
    path("usage", api.UsageList.as_view(), name="usage-list"),
    path("usage/<str:request_id>", api.UsageDetail.as_view(), name="usage-detail"),
    path("budgets", api.BudgetList.as_view(), name="budget-list"),
    path("savings", api.Savings.as_view(), name="savings"),
    path("keys", api.KeyList.as_view(), name="key-list"),
    path("keys/<uuid:code>/rotate", api.KeyRotate.as_view(), name="key-rotate"),
    path("keys/<uuid:code>/revoke", api.KeyRevoke.as_view(), name="key-revoke"),
    path("batches", api.BatchList.as_view(), name="batch-list"),
    path("batches/<uuid:code>", api.BatchDetail.as_view(), name="batch-detail"),
    path("batches/<uuid:code>/results", api.BatchResults.as_view(), name="batch-results"),
    path("batches/<uuid:code>/cancel", api.BatchCancel.as_view(), name="batch-cancel"),
    path("feedback", quality_api.FeedbackCreate.as_view(), name="feedback"),
    path(
        "feedback/satisfaction",
        quality_api.SatisfactionReport.as_view(),
        name="feedback-satisfaction",
    ),
    path("route/preview", api.RoutePreview.as_view(), name="route-preview"),
]
