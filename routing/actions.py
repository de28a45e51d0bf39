"""Writes that touch several routing models: configuration import, client keys."""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta
from typing import Any

from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from billing.actions import upsert_budget
from billing.models import Budget
from billing.prices import direct_price, list_price
from project.alerts import raise_alert
from project.auditing import record_update
from project.incidents import open_incident
from project.models import Incident
from routing import rules_config
from routing.config import (
    ConfigError,
    CredentialSpec,
    GatewayConfig,
    KeyLimitSpec,
    ModelSpec,
    OrganisationSpec,
)
from routing.experiments import config as experiments_config
from routing.models import (
    ClientKey,
    Deployment,
    Environment,
    Organisation,
    Provider,
    ProviderCredential,
    Route,
    RouteStep,
)
from routing.signals import config_changed


@transaction.atomic
def import_config(config: GatewayConfig) -> Counter[str]:
    """Make the database say what ``config`` says. Returns counts like {"provider created": 4}."""
    report: Counter[str] = Counter()
    providers = {}
    for spec in config.providers:
        provider, outcome = _upsert(
            Provider,
            {"name": spec.name},
            protocol=spec.protocol,
            base_url=spec.base_url,
            vendor=spec.vendor,
            priority=spec.priority,
            baa_signed=spec.baa_signed,
            data_region=spec.data_region,
            connect_timeout=spec.connect_timeout,
            read_timeout=spec.read_timeout,
            enabled=spec.enabled,
        )
        providers[spec.name] = provider
        report[f"provider {outcome}"] += 1
        for credential_spec in spec.credentials:
            report[f"credential {_upsert_credential(provider, credential_spec)}"] += 1
    deployments = {}
    for model in config.models:
        provider = providers[model.provider]
        deployment, outcome = _upsert(
            Deployment,
            {"provider": provider, "name": model.name},
            **_deployment_fields(model, provider),
        )
        deployments[(model.provider, model.name)] = deployment
        report[f"model {outcome}"] += 1
    for route_spec in config.routes:
        route, outcome = _upsert(
            Route,
            {"name": route_spec.name},
            enabled=True,
            environments=route_spec.environments,
            strategy=route_spec.strategy,
            quality_floor=route_spec.quality_floor,
            latency_target_ms=route_spec.latency_target_ms,
        )
        wanted = [deployments[label].id for label in route_spec.chain]
        current = list(route.steps.order_by("position").values_list("deployment_id", flat=True))
        if current != wanted:
            route.steps.all().delete()
            # One save each, not bulk_create: the audit log hears only of saves.
            for position, deployment_id in enumerate(wanted, start=1):
                RouteStep.objects.create(
                    route=route, deployment_id=deployment_id, position=position
                )
            outcome = "updated" if outcome == "unchanged" else outcome
        report[f"route {outcome}"] += 1
    for budget in config.budgets:
        outcome = upsert_budget(
            scope=budget.scope,
            scope_ref=budget.ref,
            period=budget.period,
            amount_usd=budget.amount_usd,
            hard=budget.hard,
            alert_at=budget.alert_at,
        )
        report[f"budget {outcome}"] += 1
    for limits in config.key_limits:
        report[f"key limits {_apply_key_limits(limits)}"] += 1
    for organisation in config.organisations:
        report[f"organisation {_apply_organisation(organisation)}"] += 1
    for rule in config.rules:
        report[f"rule {rules_config.apply_rule(rule, _upsert)}"] += 1
    report.update(experiments_config.apply(config))
    # Every change above was a save or delete, whose signals bump the config version.
    return report


def _apply_organisation(spec: OrganisationSpec) -> str:
    """Create or update the organisation, and make it the organisation of its named keys.

    Keys the file does not name keep theirs: the file adds keys, it never takes them away.
    """
    organisation, outcome = _upsert(
        Organisation, {"name": spec.name}, industry=spec.industry, languages=spec.languages
    )
    for name in spec.keys:
        keys = list(ClientKey.objects.active().filter(name=name))
        if not keys:
            raise ConfigError(
                spec.line,
                f"organisations.{spec.name}.keys",
                f"no active client key is named {name!r}; create it first "
                "(manage.py create_client_key)",
            )
        for key in keys:
            if key.organisation_id != organisation.pk:
                key.organisation = organisation
                key.save(update_fields=["organisation"])  # the audit log and the table hear it
                outcome = "updated" if outcome == "unchanged" else outcome
    return str(outcome)


def _apply_key_limits(spec: KeyLimitSpec) -> str:
    """Give every active key of the name its limits; a name with no such key is an error."""
    keys = list(ClientKey.objects.active().filter(name=spec.name))
    if not keys:
        raise ConfigError(
            spec.line,
            f"limits.keys.{spec.name}",
            "no active client key has this name; create it first (manage.py create_client_key)",
        )
    wanted = {
        "rpm": spec.rpm,
        "tpm": spec.tpm,
        "max_concurrent": spec.max_concurrent,
        "burst": spec.burst or None,
    }
    outcome = "unchanged"
    for key in keys:
        changed = [name for name, value in wanted.items() if getattr(key, name) != value]
        if changed:
            for name in changed:
                setattr(key, name, wanted[name])
            key.save(update_fields=changed)  # one save each: the audit log and the table hear it
            outcome = "updated"
    return outcome


def _upsert_credential(provider: Provider, spec: CredentialSpec) -> str:
    """Create or update the credential of (provider, environment, label).

    Credentials the file does not name are left as they are: one added in the
    admin during a rotation is not deleted by the next import.
    """
    credential = ProviderCredential.objects.filter(
        provider=provider, environment=spec.environment, label=spec.label
    ).first()
    if credential is None:
        if spec.keeps_stored_key:
            raise ConfigError(
                spec.line,
                f"providers.{provider.name}.credentials",
                f"the {spec.environment} credential gives no api_key or api_key_env, and there "
                "is no stored key to keep",
            )
        credential = ProviderCredential(
            provider=provider, environment=spec.environment, label=spec.label
        )
        outcome = "created"
    else:
        outcome = "unchanged"
    changed = credential.pk is None
    for name in ("rotation_days", "enabled"):
        if getattr(credential, name) != getattr(spec, name):
            setattr(credential, name, getattr(spec, name))
            changed = True
    if spec.api_key and credential.stored_secret() != spec.api_key:  # ciphertexts always differ
        credential.set_secret(spec.api_key)
        credential.api_key_env = ""
        changed = True
    elif spec.api_key_env and credential.api_key_env != spec.api_key_env:
        credential.set_secret("")  # the key now comes from another variable: a rotation
        credential.api_key_env = spec.api_key_env
        changed = True
    if changed:
        credential.save()
        outcome = "updated" if outcome == "unchanged" else outcome
    return outcome


def mark_credentials_rotated(credentials: QuerySet[ProviderCredential]) -> int:
    """Restart the rotation clock of credentials whose variable now holds a new key."""
    now = timezone.now()
    count = 0
    for credential in credentials:  # one save each: the audit log hears only of saves
        credential.rotated_at = now
        credential.save(update_fields=["rotated_at"])
        count += 1
    return count


def alert_overdue_credentials(now: datetime | None = None) -> int:
    """Put an alert in the outbox for each credential past its rotation date; returns how many.

    One alert per credential and due date: it fires once, and again only after
    the next rotation falls due.
    """
    raised = 0
    for credential in ProviderCredential.objects.overdue(now):
        due = credential.rotation_due_at
        assert due is not None
        _, created = raise_alert(
            "credential_rotation_due",
            f"credential:{credential.code}",
            f"The {credential.environment} API key of {credential.provider.name} is due for "
            f"rotation (due {due:%Y-%m-%d})",
            severity="warning",
            period=f"{due:%Y-%m-%d}",
            body=(
                f"{credential} was last rotated on {credential.rotated_at:%Y-%m-%d} and is "
                f"rotated every {credential.rotation_days} days. Add the new key as a "
                "credential for the same environment (it takes over at once), then disable "
                "this one; or, for a key read from an environment variable, replace the "
                "variable's value and mark the credential rotated."
            ),
            data={
                "provider": credential.provider.name,
                "environment": credential.environment,
                "credential": str(credential.code),
                "due": due.isoformat(),
            },
        )
        raised += created
    return raised


def _deployment_fields(model: ModelSpec, provider: Provider) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "enabled": model.enabled,
        "rpm": model.rpm,
        "tpm": model.tpm,
        "max_concurrency": model.max_concurrency,
        **_direct_fields(model, provider),
    }
    if model.context_window:
        fields["context_window"] = model.context_window
    if model.max_output_tokens:
        fields["max_output_tokens"] = model.max_output_tokens
    if model.input_usd_per_mtok is not None or model.output_usd_per_mtok is not None:
        fields.update(
            input_usd_per_mtok=model.input_usd_per_mtok or 0,
            output_usd_per_mtok=model.output_usd_per_mtok or 0,
            cached_input_usd_per_mtok=model.cached_input_usd_per_mtok,
            price_source=Deployment.PriceSource.CONFIG,
        )
        return fields
    price = list_price(provider.vendor, model.name) if provider.vendor else None
    if price is None:
        fields.update(
            input_usd_per_mtok=0, output_usd_per_mtok=0, price_source=Deployment.PriceSource.UNKNOWN
        )
    else:
        fields.update(
            input_usd_per_mtok=price.input_usd_per_mtok,
            output_usd_per_mtok=price.output_usd_per_mtok,
            cached_input_usd_per_mtok=price.cached_input_usd_per_mtok,
            price_source=Deployment.PriceSource.LIST,
        )
    return fields


def _direct_fields(model: ModelSpec, provider: Provider) -> dict[str, Any]:
    direct = direct_price(model.name, provider.vendor)
    if direct is None:
        return {
            "direct_vendor": "",
            "direct_model": "",
            "direct_input_usd_per_mtok": None,
            "direct_output_usd_per_mtok": None,
            "direct_cached_input_usd_per_mtok": None,
        }
    return {
        "direct_vendor": direct.vendor,
        "direct_model": direct.model,
        "direct_input_usd_per_mtok": direct.price.input_usd_per_mtok,
        "direct_output_usd_per_mtok": direct.price.output_usd_per_mtok,
        "direct_cached_input_usd_per_mtok": direct.price.cached_input_usd_per_mtok,
    }


def _upsert(model: type[Any], lookup: dict[str, Any], **fields: Any) -> tuple[Any, str]:
    """Create or update one row, saving only when something differs."""
    obj = model.objects.filter(**lookup).first()
    if obj is None:
        return model.objects.create(**lookup, **fields), "created"
    changed = [name for name, value in fields.items() if _differs(getattr(obj, name), value)]
    if not changed:
        return obj, "unchanged"
    for name in changed:
        setattr(obj, name, fields[name])
    obj.save(update_fields=changed)
    return obj, "updated"


def _differs(current: Any, wanted: Any) -> bool:
    if current is None or wanted is None:
        return current is not wanted
    try:
        return bool(current != type(current)(wanted))
    except (TypeError, ValueError):
        return bool(current != wanted)


def export_config() -> dict[str, Any]:
    """The configuration in import_config's shape. Secrets are never exported."""
    providers = {
        p.name: _clean(
            protocol=p.protocol,
            base_url=p.base_url,
            vendor=p.vendor or None,
            priority=p.priority,
            baa_signed=p.baa_signed or None,
            data_region=p.data_region,
            connect_timeout=p.connect_timeout,
            read_timeout=p.read_timeout,
            enabled=p.enabled if not p.enabled else None,
            credentials=[
                # A stored key is not exported: the entry without a source keeps it on import.
                _clean(
                    environment=c.environment,
                    label=c.label or None,
                    api_key_env=c.api_key_env or None,
                    rotation_days=c.rotation_days,
                    enabled=c.enabled if not c.enabled else None,
                )
                for c in p.credentials.all()
            ]
            or None,
        )
        for p in Provider.objects.prefetch_related("credentials")
    }
    models = []
    for d in Deployment.objects.select_related("provider"):
        entry = _clean(
            provider=d.provider.name,
            name=d.name,
            context_window=d.context_window,
            max_output_tokens=d.max_output_tokens,
            enabled=d.enabled if not d.enabled else None,
            rpm=d.rpm,
            tpm=d.tpm,
            max_concurrency=d.max_concurrency,
        )
        if d.price_source == Deployment.PriceSource.CONFIG:
            entry.update(
                _clean(
                    input_usd_per_mtok=str(d.input_usd_per_mtok.normalize()),
                    output_usd_per_mtok=str(d.output_usd_per_mtok.normalize()),
                    cached_input_usd_per_mtok=(
                        str(d.cached_input_usd_per_mtok.normalize())
                        if d.cached_input_usd_per_mtok is not None
                        else None
                    ),
                )
            )
        models.append(entry)
    routes: dict[str, Any] = {}
    for route in Route.objects.all():
        chain = [str(d) for d in route.chain()]
        everywhere = set(route.environments) == set(Environment.values)
        long_form = _clean(
            environments=None if everywhere else route.environments,
            strategy=route.strategy if route.strategy != "ordered" else None,
            quality_floor=route.quality_floor,
            latency_target_ms=route.latency_target_ms,
        )
        routes[route.name] = {"chain": chain, **long_form} if long_form else chain
    budgets = [
        _clean(
            scope=b.scope,
            ref=b.scope_ref or None,
            period=b.period,
            amount_usd=str(b.amount_usd.normalize()),
            hard=b.hard,
            alert_at=list(b.alert_at),
        )
        for b in Budget.objects.all()
    ]
    exported: dict[str, Any] = {
        "providers": providers,
        "models": models,
        "routes": routes,
        "budgets": budgets,
    }
    key_limits: dict[str, Any] = {}
    # Keys of one name share their limits (a rotation copies them); the newest one speaks.
    for key in ClientKey.objects.active().order_by("name", "-created"):
        if key.name not in key_limits and (key.rpm or key.tpm or key.max_concurrent):
            key_limits[key.name] = _clean(
                rpm=key.rpm,
                tpm=key.tpm,
                max_concurrent=key.max_concurrent,
                burst=key.burst or None,
            )
    if key_limits:
        exported["limits"] = {"keys": key_limits}
    organisations: dict[str, Any] = {}
    for organisation in Organisation.objects.prefetch_related("keys"):
        names = sorted({k.name for k in organisation.keys.all() if k.revoked_at is None})
        organisations[organisation.name] = _clean(
            industry=organisation.industry or None,
            languages=list(organisation.languages) or None,
            keys=names or None,
        )
    if organisations:
        exported["organisations"] = organisations
    exported_rules = rules_config.export_rules()
    if exported_rules:
        exported["rules"] = exported_rules
    exported.update(experiments_config.export())
    return exported


def _clean(**fields: Any) -> dict[str, Any]:
    return {name: value for name, value in fields.items() if value is not None}


def create_client_key(
    name: str,
    scopes: list[str],
    environment: str = "prod",
    organisation: Organisation | None = None,
) -> tuple[ClientKey, str]:
    """A new key and its raw value, which is shown once and never stored."""
    key = ClientKey(name=name, scopes=scopes, environment=environment, organisation=organisation)
    raw = key.assign_new_secret()
    key.save()
    return key, raw


@transaction.atomic
def rotate_client_key(key: ClientKey, grace: timedelta) -> tuple[ClientKey, str]:
    """Issue ``key``'s successor; the old key keeps working for ``grace``, then expires.

    The successor has the same name, scopes, environment, allowed models, rate limits
    and organisation.
    Returns it and its raw value, which is shown once.
    """
    successor = ClientKey(
        name=key.name,
        scopes=list(key.scopes),
        environment=key.environment,
        allowed_models=list(key.allowed_models),
        rpm=key.rpm,
        tpm=key.tpm,
        max_concurrent=key.max_concurrent,
        burst=key.burst,
        organisation=key.organisation,
        rotated_from=key,
    )
    raw = successor.assign_new_secret()
    successor.save()
    ends = timezone.now() + grace
    if key.expires_at is None or key.expires_at > ends:
        key.expires_at = ends
        key.save(update_fields=["expires_at"])
    return successor, raw


def revoke_client_key(key: ClientKey) -> bool:
    """Revoke ``key``; False if it was already revoked. Takes effect at the next table check."""
    now = timezone.now()
    updated = ClientKey.objects.filter(pk=key.pk, revoked_at__isnull=True).update(revoked_at=now)
    if updated:
        # update() sends no signal: neither the routing table nor the audit log hears of it.
        config_changed()
        record_update(key, revoked_at=now)
    return bool(updated)


def report_compromised_key(key: ClientKey, reporter: Any) -> Incident:
    """Revoke a client key now and open its key-compromise incident (the runbook's step 2)."""
    revoked = revoke_client_key(key)
    incident, _ = open_incident(
        "key_compromise",
        f"client_key:{key.code}",
        f"Client key {key.name} ({key.prefix}) reported compromised",
        severity="critical",
        summary=f"Reported by {reporter.get_username()}; "
        + ("revoked now." if revoked else "it was revoked already."),
        data={"key": str(key.code), "prefix": key.prefix, "environment": key.environment},
    )
    return incident


def purge_cached_answers(route: str | None = None, key: ClientKey | None = None) -> int:
    """Delete the cached answers of a route, a client key, both, or (neither given) all."""
    from project.redis import sync_client
    from routing import cache

    return cache.purge(sync_client(), route=route, key_id=key.id if key is not None else None)
