from __future__ import annotations

from datetime import timedelta
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import URLPattern, path

from project.admin import AuditedModelAdmin
from project.redis import sync_client
from routing.actions import revoke_client_key, rotate_client_key
from routing.audit import audit
from routing.breaker import KEY as BREAKER_KEY
from routing.models import (
    BreakerEvent,
    ClientKey,
    Deployment,
    PriceOverride,
    Provider,
    ProviderPlan,
    Route,
    RouteStep,
    Scope,
)


class ProviderPlanInline(admin.StackedInline):
    model = ProviderPlan
    extra = 0
    max_num = 1


class DeploymentInline(admin.TabularInline):
    model = Deployment
    extra = 0
    fields = ["name", "input_usd_per_mtok", "output_usd_per_mtok", "context_window", "enabled"]
    show_change_link = True


class ProviderForm(forms.ModelForm):
    api_key = forms.CharField(
        required=False,
        strip=True,
        widget=forms.PasswordInput(render_value=False),
        label="API key",
        help_text="Stored encrypted; leave empty to keep the current one. "
        "Or name an environment variable above instead.",
    )
    clear_api_key = forms.BooleanField(required=False, label="Remove the stored API key")

    class Meta:
        model = Provider
        fields = [
            "name",
            "protocol",
            "base_url",
            "api_key_env",
            "vendor",
            "priority",
            "connect_timeout",
            "read_timeout",
            "enabled",
        ]

    def save(self, commit: bool = True) -> Provider:
        provider = super().save(commit=False)
        if self.cleaned_data.get("clear_api_key"):
            provider.set_api_key("")
        elif self.cleaned_data.get("api_key"):
            provider.set_api_key(self.cleaned_data["api_key"])
        if commit:
            provider.save()
        return provider


@admin.register(Provider)
class ProviderAdmin(AuditedModelAdmin):
    form = ProviderForm
    list_display = ["name", "protocol", "base_url", "api_key_source", "priority", "enabled"]
    list_editable = ["priority", "enabled"]
    list_filter = ["protocol", "enabled"]
    search_fields = ["name", "base_url"]
    readonly_fields = ["api_key_source"]
    inlines = [ProviderPlanInline, DeploymentInline]

    @admin.display(description="API key")
    def api_key_source(self, provider: Provider) -> str:
        if provider.api_key_encrypted:
            return (
                f"stored, ending …{provider.api_key_last4}" if provider.api_key_last4 else "stored"
            )
        return f"${provider.api_key_env}" if provider.api_key_env else "none"


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


class RouteStepInline(admin.TabularInline):
    model = RouteStep
    extra = 1
    ordering = ["position"]
    autocomplete_fields = ["deployment"]


@admin.register(Route)
class RouteAdmin(AuditedModelAdmin):
    list_display = ["name", "description", "chain_display", "enabled"]
    search_fields = ["name"]
    inlines = [RouteStepInline]

    @admin.display(description="Chain")
    def chain_display(self, route: Route) -> str:
        return " → ".join(str(d) for d in route.chain())


class ClientKeyForm(forms.ModelForm):
    scopes = forms.MultipleChoiceField(
        choices=Scope.choices, widget=forms.CheckboxSelectMultiple, initial=[Scope.CHAT]
    )

    class Meta:
        model = ClientKey
        fields = ["name", "environment", "scopes", "allowed_models", "expires_at"]


@admin.register(ClientKey)
class ClientKeyAdmin(AuditedModelAdmin):
    form = ClientKeyForm
    list_display = [
        "name",
        "prefix",
        "environment",
        "scopes",
        "created",
        "last_used_at",
        "expires_at",
        "revoked_at",
    ]
    list_filter = ["environment", "revoked_at"]
    search_fields = ["name", "prefix"]
    readonly_fields = ["prefix", "created", "last_used_at", "revoked_at"]
    actions = ["revoke", "rotate"]

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

    @admin.action(description="Rotate: issue a successor, the old key works 24 h more")
    def rotate(self, request: HttpRequest, queryset: QuerySet[ClientKey]) -> HttpResponse | None:
        keys = list(queryset.filter(revoked_at__isnull=True))
        if len(keys) != 1:
            messages.error(request, "Rotate one active key at a time: its new key is shown once.")
            return None
        successor, raw = rotate_client_key(keys[0], timedelta(hours=24))
        return self._show_once(request, successor, raw)

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
