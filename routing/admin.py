from __future__ import annotations

from datetime import timedelta
from typing import Any

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.core.exceptions import PermissionDenied
from django.db.models import Count, Q, QuerySet
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.utils.html import format_html

from project.admin import AuditedModelAdmin, ReadOnlyAdmin
from project.redis import sync_client
from routing.actions import (
    mark_credentials_rotated,
    purge_cached_answers,
    report_compromised_key,
    revoke_client_key,
    rotate_client_key,
)
from routing.audit import audit
from routing.batches.actions import cancel_batch
from routing.breaker import KEY as BREAKER_KEY
from routing.models import (
    Batch,
    BatchItem,
    BreakerEvent,
    ClientKey,
    Deployment,
    DeploymentHealth,
    Organisation,
    PriceOverride,
    ProbeResult,
    Provider,
    ProviderCredential,
    ProviderPlan,
    Route,
    RouteStep,
    RoutingRule,
    Scope,
)
from routing.quality import admin as quality_admin  # noqa: F401  (registers its admins)
from routing.rules import ACTION_FIELDS, CONDITION_FIELDS
from routing.rules_admin import (
    RoutingRuleForm,
    describe_actions,
    describe_conditions,
    live_summary,
)
from routing.status import status


class ProviderPlanInline(admin.StackedInline):
    model = ProviderPlan
    extra = 0
    max_num = 1


class DeploymentInline(admin.TabularInline):
    model = Deployment
    extra = 0
    fields = ["name", "input_usd_per_mtok", "output_usd_per_mtok", "context_window", "enabled"]
    show_change_link = True


class ProviderCredentialInline(admin.TabularInline):
    model = ProviderCredential
    extra = 0
    fields = ["environment", "label", "source", "rotation_due", "last_used_at", "enabled"]
    readonly_fields = ["source", "rotation_due", "last_used_at"]
    show_change_link = True
    can_delete = False

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # a credential needs its secret: added on its own page

    @admin.display(description="Rotation due")
    def rotation_due(self, credential: ProviderCredential) -> str:
        return rotation_due_text(credential)


def cached_answers(count: int) -> str:
    return f"{count} cached answer" + ("" if count == 1 else "s")


def rotation_due_text(credential: ProviderCredential) -> str:
    due = credential.rotation_due_at
    if due is None:
        return "no schedule"
    overdue = " (overdue)" if credential.is_overdue() else ""
    return f"{due:%Y-%m-%d}{overdue}"


@admin.register(Provider)
class ProviderAdmin(AuditedModelAdmin):
    list_display = [
        "name",
        "protocol",
        "base_url",
        "credential_summary",
        "baa_signed",
        "data_region",
        "priority",
        "enabled",
    ]
    list_editable = ["priority", "enabled"]
    list_filter = ["protocol", "enabled", "baa_signed", "data_region"]
    search_fields = ["name", "base_url"]
    fields = [
        "name",
        "protocol",
        "base_url",
        "vendor",
        "priority",
        "baa_signed",
        "data_region",
        "connect_timeout",
        "read_timeout",
        "enabled",
    ]
    inlines = [ProviderCredentialInline, ProviderPlanInline, DeploymentInline]
    change_list_template = "routing/provider_change_list.html"  # adds the status page link

    def get_queryset(self, request: HttpRequest) -> QuerySet[Provider]:
        return super().get_queryset(request).prefetch_related("credentials")

    @admin.display(description="Credentials")
    def credential_summary(self, provider: Provider) -> str:
        enabled = [c for c in provider.credentials.all() if c.enabled]
        if not enabled:
            return "none"
        environments = ", ".join(sorted({c.environment for c in enabled}))
        overdue = sum(c.is_overdue() for c in enabled)
        return f"{environments} ({overdue} overdue)" if overdue else environments


class ProviderCredentialForm(forms.ModelForm):
    secret = forms.CharField(
        required=False,
        strip=True,
        widget=forms.PasswordInput(render_value=False),
        label="API key",
        help_text="Stored encrypted; only its last four characters are shown again. Leave "
        "empty to keep the current one, or name an environment variable instead.",
    )

    class Meta:
        model = ProviderCredential
        fields = [
            "provider",
            "environment",
            "label",
            "api_key_env",
            "rotation_days",
            "enabled",
        ]

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        has_stored = bool(self.instance.secret_encrypted)
        if data.get("secret") and data.get("api_key_env"):
            raise forms.ValidationError("Give the API key or an environment variable, not both.")
        if not data.get("secret") and not data.get("api_key_env") and not has_stored:
            raise forms.ValidationError("Give the API key, or the environment variable holding it.")
        return data

    def save(self, commit: bool = True) -> ProviderCredential:
        credential = super().save(commit=False)
        if self.cleaned_data.get("secret"):
            credential.set_secret(self.cleaned_data["secret"])
            credential.api_key_env = ""
        elif self.cleaned_data.get("api_key_env") and "api_key_env" in self.changed_data:
            credential.set_secret("")  # now read from the variable: a rotation
        if commit:
            credential.save()
        return credential


class RotateForm(forms.Form):
    grace_hours = forms.IntegerField(
        min_value=0,
        max_value=720,
        initial=24,
        label="Grace period (hours)",
        help_text="How long the old key keeps working, so its services can move to the "
        "new one (0: it stops at once).",
    )


class RotationFilter(admin.SimpleListFilter):
    title = "rotation"
    parameter_name = "rotation"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("overdue", "Overdue"), ("due30", "Due within 30 days")]

    def queryset(
        self, request: HttpRequest, queryset: QuerySet[ProviderCredential]
    ) -> QuerySet[ProviderCredential]:
        if self.value() == "overdue":
            return queryset.filter(pk__in=[c.pk for c in ProviderCredential.objects.overdue()])
        if self.value() == "due30":
            soon = timezone.now() + timedelta(days=30)
            return queryset.filter(pk__in=[c.pk for c in ProviderCredential.objects.overdue(soon)])
        return queryset


@admin.register(ProviderCredential)
class ProviderCredentialAdmin(AuditedModelAdmin):
    form = ProviderCredentialForm
    list_display = [
        "provider",
        "environment",
        "label",
        "source",
        "rotated_at",
        "rotation_due",
        "last_used_at",
        "enabled",
    ]
    list_filter = [RotationFilter, "environment", "provider", "enabled"]
    list_select_related = ["provider"]
    readonly_fields = ["source", "rotated_at", "rotation_due", "last_used_at"]
    actions = ["mark_rotated", "disable"]

    @admin.display(description="Rotation due")
    def rotation_due(self, credential: ProviderCredential) -> str:
        return rotation_due_text(credential)

    @admin.action(description="Mark as rotated now (the variable holds a new key)")
    def mark_rotated(self, request: HttpRequest, queryset: QuerySet[ProviderCredential]) -> None:
        count = mark_credentials_rotated(queryset)
        self.message_user(request, f"{count} credential(s) marked as rotated.", messages.SUCCESS)

    @admin.action(description="Disable (retire after a rotation)")
    def disable(self, request: HttpRequest, queryset: QuerySet[ProviderCredential]) -> None:
        count = 0
        for credential in queryset.filter(enabled=True):
            credential.enabled = False
            credential.save(update_fields=["enabled"])  # each save bumps the table version
            count += 1
        self.message_user(request, f"{count} credential(s) disabled.", messages.SUCCESS)


class BreakerEventInline(admin.TabularInline):
    model = BreakerEvent
    extra = 0
    max_num = 0
    can_delete = False
    fields = ("created", "from_state", "to_state", "reason")
    readonly_fields = fields
    ordering = ["-created"]


class PriceOverrideInline(admin.TabularInline):
    model = PriceOverride
    extra = 0
    fields = [
        "effective_from",
        "input_usd_per_mtok",
        "output_usd_per_mtok",
        "cached_input_usd_per_mtok",
        "note",
    ]


@admin.register(Deployment)
class DeploymentAdmin(AuditedModelAdmin):
    list_display = [
        "__str__",
        "input_usd_per_mtok",
        "output_usd_per_mtok",
        "price_source",
        "context_window",
        "enabled",
        "breaker",
        "max_concurrency",
        "live_numbers",
    ]
    list_filter = ["provider", "enabled", "price_source"]
    search_fields = ["name", "provider__name"]
    list_select_related = ["provider"]
    inlines = [PriceOverrideInline, BreakerEventInline]

    @admin.display(description="Breaker")
    def breaker(self, deployment: Deployment) -> str:
        # The live state is in Redis, shared by every gateway process.
        state = sync_client().hget(BREAKER_KEY.format(deployment.id), "state")
        return state.decode() if isinstance(state, bytes) else "closed"

    @admin.display(description="Live: in flight, latency, errors, quality")
    def live_numbers(self, deployment: Deployment) -> str:
        return live_summary(deployment)


class RouteStepInline(admin.TabularInline):
    model = RouteStep
    extra = 1
    ordering = ["position"]
    autocomplete_fields = ["deployment"]


@admin.register(Route)
class RouteAdmin(AuditedModelAdmin):
    list_display = ["name", "description", "chain_display", "strategy", "quality_floor", "enabled"]
    list_filter = ["strategy"]
    search_fields = ["name"]
    inlines = [RouteStepInline]
    actions = ["purge_cache"]

    @admin.action(
        description="Purge the cached answers of the selected routes", permissions=["change"]
    )
    def purge_cache(self, request: HttpRequest, queryset: QuerySet[Route]) -> None:
        deleted = sum(purge_cached_answers(route=route.name) for route in queryset)
        self.message_user(request, f"Deleted {cached_answers(deleted)}.", messages.SUCCESS)

    @admin.display(description="Chain")
    def chain_display(self, route: Route) -> str:
        return " → ".join(str(d) for d in route.chain())


class ClientKeyForm(forms.ModelForm):
    scopes = forms.MultipleChoiceField(
        choices=Scope.choices, widget=forms.CheckboxSelectMultiple, initial=[Scope.CHAT]
    )

    class Meta:
        model = ClientKey
        fields = [
            "name",
            "environment",
            "scopes",
            "allowed_models",
            "expires_at",
            "rpm",
            "tpm",
            "max_concurrent",
            "burst",
            "organisation",
        ]


@admin.register(Organisation)
class OrganisationAdmin(AuditedModelAdmin):
    """A customer: its industry and languages apply to every request of its keys."""

    list_display = ["name", "industry", "languages", "key_count", "created"]
    list_filter = ["industry"]
    search_fields = ["name"]
    readonly_fields = ["created"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Organisation]:
        return (
            super()
            .get_queryset(request)
            .annotate(active_keys=Count("keys", filter=Q(keys__revoked_at__isnull=True)))
        )

    @admin.display(description="active keys", ordering="active_keys")
    def key_count(self, obj: Organisation) -> int:
        return obj.active_keys  # type: ignore[attr-defined]


@admin.register(ClientKey)
class ClientKeyAdmin(AuditedModelAdmin):
    form = ClientKeyForm
    list_display = [
        "name",
        "prefix",
        "environment",
        "organisation",
        "scopes",
        "created",
        "last_used_at",
        "expires_at",
        "revoked_at",
    ]
    list_filter = ["environment", "organisation", "revoked_at"]
    search_fields = ["name", "prefix"]
    readonly_fields = ["prefix", "created", "last_used_at", "revoked_at"]
    actions = ["revoke", "rotate", "purge_cache", "report_compromised"]

    change_list_template = "routing/clientkey_change_list.html"  # adds the audit link

    def get_urls(self) -> list[URLPattern]:
        view = self.admin_site.admin_view(self.audit_view)
        return [path("audit/", view, name="routing_key_audit"), *super().get_urls()]

    def audit_view(self, request: HttpRequest) -> HttpResponse:
        """The key audit of `manage.py audit_keys`, for staff who may view keys."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        days = int(request.GET.get("days", "30")) if request.GET.get("days", "").isdigit() else 30
        context = {
            **self.admin_site.each_context(request),
            "title": "Key audit",
            "opts": self.model._meta,
            "findings": audit(sync_client(), unused_days=days),
            "days": days,
        }
        return TemplateResponse(request, "routing/key_audit.html", context)

    def save_model(self, request: HttpRequest, obj: ClientKey, form: Any, change: bool) -> None:
        if not change:
            # Kept on the instance only for the page below; never stored or logged.
            obj._raw_key = obj.assign_new_secret()  # type: ignore[attr-defined]
        super().save_model(request, obj, form, change)

    def response_add(
        self, request: HttpRequest, obj: ClientKey, post_url_continue: Any = None
    ) -> HttpResponse:
        # Shown on this response, not through a flash message, which would put
        # the raw key in the session store.
        return self._show_once(request, obj, obj._raw_key)  # type: ignore[attr-defined]

    def _show_once(self, request: HttpRequest, key: ClientKey, raw: str) -> HttpResponse:
        context = {
            **self.admin_site.each_context(request),
            "key": key,
            "raw_key": raw,
            "opts": self.model._meta,
            "title": "Copy the new key now",
        }
        return TemplateResponse(request, "routing/clientkey_created.html", context)

    @admin.action(description="Rotate: issue a successor; the old key works for a grace period")
    def rotate(self, request: HttpRequest, queryset: QuerySet[ClientKey]) -> HttpResponse | None:
        keys = list(queryset.filter(revoked_at__isnull=True).select_related("successor"))
        if len(keys) != 1:
            messages.error(request, "Rotate one active key at a time: its new key is shown once.")
            return None
        key = keys[0]
        if getattr(key, "successor", None) is not None:
            messages.error(request, f"{key} was already rotated; rotate its successor instead.")
            return None
        form = RotateForm(request.POST if "apply" in request.POST else None)
        if not form.is_valid():
            # The intermediate page: the admin chooses how long the old key keeps working.
            context = {
                **self.admin_site.each_context(request),
                "title": f"Rotate {key}",
                "key": key,
                "form": form,
                "opts": self.model._meta,
                "action_checkbox_name": ACTION_CHECKBOX_NAME,
            }
            return TemplateResponse(request, "routing/clientkey_rotate.html", context)
        grace = timedelta(hours=form.cleaned_data["grace_hours"])
        successor, raw = rotate_client_key(key, grace)
        return self._show_once(request, successor, raw)

    @admin.action(
        description="Purge the cached answers of the selected keys", permissions=["change"]
    )
    def purge_cache(self, request: HttpRequest, queryset: QuerySet[ClientKey]) -> None:
        deleted = sum(purge_cached_answers(key=key) for key in queryset)
        self.message_user(request, f"Deleted {cached_answers(deleted)}.", messages.SUCCESS)

    @admin.action(
        description="Report compromised: revoke now and open a key-compromise incident",
        permissions=["change"],
    )
    def report_compromised(self, request: HttpRequest, queryset: QuerySet[ClientKey]) -> None:
        for key in queryset:
            incident = report_compromised_key(key, request.user)
            link = reverse("admin:project_incident_change", args=[incident.pk])
            messages.warning(
                request, format_html('{} revoked; <a href="{}">its incident</a>.', key, link)
            )

    @admin.action(description="Revoke the selected keys")
    def revoke(self, request: HttpRequest, queryset: QuerySet[ClientKey]) -> None:
        revoked = sum(revoke_client_key(key) for key in queryset)
        messages.success(
            request, f"Revoked {revoked} key(s); gateways stop accepting them within a second."
        )


@admin.register(BreakerEvent)
class BreakerEventAdmin(admin.ModelAdmin):
    list_display = ["created", "deployment", "from_state", "to_state", "reason"]
    list_filter = ["to_state", "deployment__provider"]
    list_select_related = ["deployment__provider"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(DeploymentHealth)
class DeploymentHealthAdmin(ReadOnlyAdmin):
    """Its list is the provider status page: each provider's state, latency and uptime."""

    fields = ["deployment", "state", "since", "reason", "checked_at"]

    def changelist_view(self, request: HttpRequest, extra_context: Any = None) -> HttpResponse:
        if not self.has_view_permission(request):
            raise PermissionDenied
        context = {
            **self.admin_site.each_context(request),
            "title": "Provider status",
            "opts": self.model._meta,
            "probe_seconds": settings.SWITCHBOARD["PROBE_SECONDS"],
            **status(),
        }
        return TemplateResponse(request, "routing/status.html", context)


@admin.register(ProbeResult)
class ProbeResultAdmin(ReadOnlyAdmin):
    list_display = [
        "created",
        "deployment",
        "ok",
        "status_code",
        "latency_ms",
        "error_code",
        "error",
        "cost_usd",
    ]
    list_filter = ["ok", "deployment__provider", "error_code"]
    list_select_related = ["deployment__provider"]
    date_hierarchy = "created"


@admin.register(Batch)
class BatchAdmin(admin.ModelAdmin):
    """Batches are clients' data, not configuration: read-only here, but they can be cancelled."""

    list_display = ["code", "client_key", "status", "total", "progress", "route", "created"]
    list_filter = ["status"]
    list_select_related = ["client_key"]
    search_fields = ["code", "client_key__name"]
    fields = readonly_fields = (
        "code",
        "client_key",
        "status",
        "route",
        "total",
        "progress",
        "first_failures",
        "error",
        "created",
        "started_at",
        "finished_at",
    )
    actions = ["cancel"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # submitted through the API or `manage.py submit_batch`

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # A batch's page only shows it; the change permission is what cancelling needs.
        return obj is None and super().has_change_permission(request)

    @admin.display(description="Progress")
    def progress(self, batch: Batch) -> str:
        counts = Batch.objects.filter(pk=batch.pk).item_counts()[batch.pk]
        shown = ", ".join(f"{n} {status}" for status, n in counts.items() if n)
        return shown or "no items"

    @admin.display(description="First failures")
    def first_failures(self, batch: Batch) -> str:
        failed = batch.items.filter(status=BatchItem.Status.FAILED).order_by("index")[:10]
        lines = [f"#{item.index}: {(item.error or {}).get('code', '')}" for item in failed]
        return "; ".join(lines) or "none"

    @admin.action(description="Cancel the selected batches", permissions=["change"])
    def cancel(self, request: HttpRequest, queryset: QuerySet[Batch]) -> None:
        cancelled = sum(cancel_batch(batch) for batch in queryset)
        messages.success(
            request,
            f"Cancelled {cancelled} batch(es); requests already in flight finish and are billed.",
        )


# The monitoring pages, and experiments and rollouts, have their own admin modules.
import routing.experiments.admin  # noqa: E402, F401
from routing import monitoring_admin  # noqa: E402, F401


@admin.register(RoutingRule)
class RoutingRuleAdmin(AuditedModelAdmin):
    """Rules apply in priority order; see routing/README.md#rules-and-strategies."""

    form = RoutingRuleForm
    list_display = ["priority", "name", "conditions", "effects", "enabled"]
    list_display_links = ["name"]
    list_editable = ["priority", "enabled"]
    list_filter = ["enabled"]
    search_fields = ["name", "description"]
    ordering = ["priority", "name"]
    fieldsets = [
        (None, {"fields": ["name", "description", "priority", "enabled"]}),
        (
            "When (every condition given must hold; an empty one matches anything)",
            {"fields": list(CONDITION_FIELDS)},
        ),
        ("Then", {"fields": list(ACTION_FIELDS)}),
    ]

    @admin.display(description="When")
    def conditions(self, rule: RoutingRule) -> str:
        return describe_conditions(rule)

    @admin.display(description="Then")
    def effects(self, rule: RoutingRule) -> str:
        return describe_actions(rule)
