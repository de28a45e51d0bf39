from __future__ import annotations

from django.urls import path

from routing import api

urlpatterns = [
    path("usage", api.UsageList.as_view(), name="usage-list"),
    path("usage/<str:request_id>", api.UsageDetail.as_view(), name="usage-detail"),
    path("budgets", api.BudgetList.as_view(), name="budget-list"),
    path("savings", api.Savings.as_view(), name="savings"),
]
