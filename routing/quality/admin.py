"""Quality in the admin: the rules' weights, feedback, judge scores, and the Quality page."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import URLPattern, path

from project.admin import AuditedModelAdmin, ReadOnlyAdmin
from routing.quality.models import Feedback, JudgeScore, QualityRule
from routing.quality.report import quality_page

PAGE_DAYS = (1, 7, 30)


@admin.register(QualityRule)
class QualityRuleAdmin(AuditedModelAdmin):
    list_display = ["key", "title", "weight", "default", "enabled"]
    list_editable = ["weight", "enabled"]
    fields = ["key", "weight", "enabled"]

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        return ["key"] if obj is not None else []

    @admin.display(description="Checks")
    def title(self, rule: QualityRule) -> str:
        return rule.get_key_display()

    @admin.display(description="Default weight")
    def default(self, rule: QualityRule) -> int:
        return rule.default_weight


@admin.register(Feedback)
class FeedbackAdmin(ReadOnlyAdmin):
    list_display = ["request_id", "user", "shown_rating", "positive", "route", "provider",
                    "model", "arm", "rollout_arm", "updated"]  # fmt: skip
    list_filter = ["positive", "kind", "provider", "route", "rollout_arm"]
    search_fields = ["request_id", "user"]
    date_hierarchy = "updated"
    change_list_template = "routing/feedback_change_list.html"  # adds the Quality page link

    @admin.display(description="Rating")
    def shown_rating(self, feedback: Feedback) -> str:
        if feedback.kind == Feedback.Kind.THUMBS:
            return "up" if feedback.rating else "down"
        return f"{feedback.rating}/5"

    def get_urls(self) -> list[URLPattern]:
        view = self.admin_site.admin_view(self.quality_view)
        return [path("quality/", view, name="routing_quality"), *super().get_urls()]

    def quality_view(self, request: HttpRequest) -> HttpResponse:
        """Satisfaction and the automated score per model, route, provider and arm."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        try:
            days = int(request.GET.get("days", "7"))
        except ValueError:
            days = 7
        if days not in PAGE_DAYS:
            days = 7
        context = {
            **self.admin_site.each_context(request),
            "title": "Quality",
            "opts": self.model._meta,
            "choices": PAGE_DAYS,
            **quality_page(days),
        }
        return TemplateResponse(request, "routing/quality.html", context)


@admin.register(JudgeScore)
class JudgeScoreAdmin(ReadOnlyAdmin):
    list_display = ["request_id", "score", "judge_route", "route", "provider", "model", "created"]
    list_filter = ["judge_route", "provider"]
    search_fields = ["request_id"]
