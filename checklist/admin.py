from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse

from checklist.actions import assign_owner, change_item, import_checklist, set_start_date
from checklist.evidence import REGISTRY
from checklist.markdown import ChecklistSyntaxError
from checklist.models import (
    Checklist,
    EvidenceResult,
    FallbackDrill,
    Item,
    ItemEvent,
    Phase,
    SignOff,
    SignOffRole,
)
from project.admin import AuditedModelAdmin, ReadOnlyAdmin


class MarkdownForm(forms.Form):
    markdown = forms.FileField(
        label="Checklist file (Markdown)",
        help_text="Phases as ##, sections as ###, items as nested '- [ ]' lines. Items are "
        "matched by their heading path: progress and history are kept.",
    )

    def text(self) -> str:
        raw = self.cleaned_data["markdown"].read()
        try:
            return str(raw.decode("utf-8-sig"))
        except UnicodeDecodeError:
            raise forms.ValidationError("The file is not UTF-8 text.") from None


class PhaseInline(admin.TabularInline):
    model = Phase
    fields = ["position", "title", "start_day", "end_day", "archived"]
    readonly_fields = ["position", "title", "start_day", "end_day", "archived"]
    extra = 0
    can_delete = False
    show_change_link = False

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # phases come from the imported file


@admin.register(Checklist)
class ChecklistAdmin(AuditedModelAdmin):
    list_display = ["title", "slug", "start_date", "completed_at", "source_name", "imported_at"]
    readonly_fields = ["slug", "title", "completed_at", "source_name", "imported_at", "notes"]
    fields = ["title", "slug", "start_date", "completed_at", "source_name", "imported_at", "notes"]
    inlines = [PhaseInline]
    actions = ["import_markdown"]

    def save_model(self, request: HttpRequest, obj: Checklist, form: Any, change: bool) -> None:
        if "start_date" in form.changed_data:
            set_start_date(obj, obj.start_date)  # and every item's due date with it
        else:
            super().save_model(request, obj, form, change)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # a checklist is made by importing a file (the action, or the command)

    @admin.action(
        description="Import a Markdown file into the selected checklist", permissions=["change"]
    )
    def import_markdown(
        self, request: HttpRequest, queryset: QuerySet[Checklist]
    ) -> HttpResponse | None:
        if queryset.count() != 1:
            messages.error(request, "Select one checklist to import into.")
            return None
        checklist = queryset.get()
        form = (
            MarkdownForm(request.POST, request.FILES) if "apply" in request.POST else MarkdownForm()
        )
        if form.is_bound and form.is_valid():
            try:
                report = import_checklist(
                    form.text(), checklist.slug, form.cleaned_data["markdown"].name
                )
            except (ChecklistSyntaxError, forms.ValidationError) as exc:
                form.add_error("markdown", f"{exc}. Nothing was changed.")
            else:
                messages.success(request, f"Imported into {checklist}: {report.summary()}.")
                return None
        context = {
            **self.admin_site.each_context(request),
            "title": f"Import into {checklist}",
            "checklist": checklist,
            "form": form,
            "opts": self.model._meta,
            "action_checkbox_name": ACTION_CHECKBOX_NAME,
        }
        return TemplateResponse(request, "checklist/admin/import.html", context)


class ItemEventInline(admin.TabularInline):
    model = ItemEvent
    fields = ["created", "user_name", "kind", "from_status", "to_status", "comment"]
    readonly_fields = ["created", "user_name", "kind", "from_status", "to_status", "comment"]
    extra = 0
    can_delete = False

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # history is written by checklist.actions


class ItemForm(forms.ModelForm):  # type: ignore[type-arg]
    evidence_key = forms.ChoiceField(
        required=False,
        label="Evidence",
        help_text="The live check that proves this line (checklist/evidence.py).",
    )

    class Meta:
        model = Item
        fields = ["status", "owner", "owner_role", "evidence_key"]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        choices = [("", "—"), *((key, f"{c.title} ({key})") for key, c in REGISTRY.items())]
        self.fields["evidence_key"].choices = choices  # type: ignore[attr-defined]


@admin.register(Item)
class ItemAdmin(AuditedModelAdmin):
    form = ItemForm
    list_display = ["title", "detail", "section", "status", "owner_display", "due_on", "archived"]
    list_filter = [
        "checklist",
        "status",
        "archived",
        "section__phase",
        "owner_role",
        "evidence_key",
    ]
    search_fields = ["title", "detail", "key"]
    readonly_fields = [
        "checklist", "section", "parent", "key", "title", "detail", "position", "depth",
        "due_on", "archived",
    ]  # fmt: skip
    fields = [*readonly_fields, "status", "owner", "owner_role", "evidence_key"]
    inlines = [ItemEventInline]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # items come from the imported file

    def save_model(self, request: HttpRequest, obj: Item, form: Any, change: bool) -> None:
        # Through the actions, so that every change leaves an ItemEvent with who and when.
        if "owner" in form.changed_data or "owner_role" in form.changed_data:
            assign_owner(obj, request.user, obj.owner, obj.owner_role)
        if "status" in form.changed_data:
            change_item(obj, request.user, status=obj.status)
        if "evidence_key" in form.changed_data:
            obj.save(update_fields=["evidence_key"])


@admin.register(SignOffRole)
class SignOffRoleAdmin(AuditedModelAdmin):
    list_display = ["name", "checklist", "holders"]
    list_filter = ["checklist"]
    fields = ["checklist", "name", "responsibility", "position", "users"]
    filter_horizontal = ["users"]

    @admin.display(description="Held by")
    def holders(self, role: SignOffRole) -> str:
        return ", ".join(u.get_username() for u in role.users.all()) or "nobody"


@admin.register(EvidenceResult)
class EvidenceResultAdmin(ReadOnlyAdmin):
    list_display = ["key", "status", "value", "threshold", "measured_at"]
    list_filter = ["status", "key"]
    date_hierarchy = "measured_at"


@admin.register(FallbackDrill)
class FallbackDrillAdmin(ReadOnlyAdmin):
    list_display = ["created", "status", "environment", "route", "passed", "finished_at"]
    list_filter = ["status"]
    fields = [
        "status", "environment", "route", "scenarios", "error", "requested_by", "started_at",
        "finished_at",
    ]  # fmt: skip

    @admin.display(description="Scenarios passed")
    def passed(self, drill: FallbackDrill) -> str:
        return f"{drill.passed_count} of {len(drill.scenarios)}"


@admin.register(SignOff)
class SignOffAdmin(ReadOnlyAdmin):
    """Signing and revoking happen on /checklist/, as the role's holder (checklist.actions)."""

    list_display = ["role", "user_name", "signed_at", "revoked_at", "revoked_by_name"]
    list_filter = ["role", "revoked_at"]
    fields = [
        "role", "user_name", "comment", "signed_at", "evidence", "revoked_at", "revoked_by_name",
        "revoke_reason",
    ]  # fmt: skip
