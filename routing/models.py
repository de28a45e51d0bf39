"""Gateway configuration: providers, the models deployed on them, routes, client keys.

The request path never reads these tables directly: `routing.table` builds an
in-memory snapshot and rebuilds it when the config version in Redis changes.
"""

from __future__ import annotations

import hashlib
import os
import secrets
from datetime import datetime, timedelta
from decimal import Decimal
from uuid import uuid4

from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator
from django.db import models
from django.db.models import Q
from django.utils import timezone

from billing.models import UsageRecord
from billing.money import MONEY_DECIMAL_PLACES, MONEY_MAX_DIGITS
from billing.plans import PlanInfo, Tier
from project.secrets import EncryptedTextField, decrypt, encrypt, last4


class Protocol(models.TextChoices):
    OPENAI = "openai", "OpenAI Chat Completions (OpenAI, AIMLAPI)"
    ANTHROPIC = "anthropic", "Anthropic Messages"
    GEMINI = "gemini", "Gemini generateContent"


class Scope(models.TextChoices):
    CHAT = "chat", "Chat completions"
    USAGE_READ = "usage:read", "Read usage"
    FEEDBACK = "feedback", "Send feedback"
    BATCHES = "batches", "Batch jobs"
    ADMIN = "admin", "Administration API"


class Environment(models.TextChoices):
    DEV = "dev", "Development"
    STAGING = "staging", "Staging"
    PROD = "prod", "Production"


def all_environments() -> list[str]:
    return list(Environment.values)


class DataRegion(models.TextChoices):
    US = "us", "United States"
    EU = "eu", "European Union"
    OTHER = "other", "Elsewhere / global"


class ProviderQuerySet(models.QuerySet["Provider"]):
    def enabled(self) -> ProviderQuerySet:
        return self.filter(enabled=True)


class Provider(models.Model):
    name = models.SlugField(max_length=64, unique=True, help_text="e.g. aimlapi, openai, google")
    protocol = models.CharField(max_length=16, choices=Protocol.choices)
    base_url = models.URLField(max_length=300)
    vendor = models.SlugField(
        max_length=64,
        blank=True,
        help_text="Whose list prices are the direct-cost baseline (openai, google, anthropic). "
        "Empty for resellers such as AIMLAPI.",
    )
    priority = models.PositiveSmallIntegerField(
        default=100,
        help_text="Lower first: the order in which providers serve a model asked for by name.",
    )
    baa_signed = models.BooleanField(
        default=False,
        help_text="A HIPAA Business Associate Agreement is signed: healthcare requests may "
        "go here.",
    )
    data_region = models.CharField(
        max_length=8,
        choices=DataRegion.choices,
        default=DataRegion.US,
        help_text="Where the provider processes data; EU-only requests go to EU providers only.",
    )
    connect_timeout = models.FloatField(default=5.0, help_text="Seconds to open a connection.")
    read_timeout = models.FloatField(default=60.0, help_text="Seconds to wait for each read.")
    enabled = models.BooleanField(default=True)
    created = models.DateTimeField(default=timezone.now)
    code = models.UUIDField(default=uuid4, unique=True, editable=False)

    objects = ProviderQuerySet.as_manager()

    class Meta:
        ordering = ["priority", "name"]

    def __str__(self) -> str:
        return self.name


class ProviderCredentialQuerySet(models.QuerySet["ProviderCredential"]):
    def enabled(self) -> ProviderCredentialQuerySet:
        return self.filter(enabled=True, provider__enabled=True)

    def overdue(self, now: datetime | None = None) -> list[ProviderCredential]:
        """Enabled credentials past their rotation date (few rows: computed here, not in SQL)."""
        now = now or timezone.now()
        return [c for c in self.enabled().select_related("provider") if c.is_overdue(now)]


class ProviderCredential(models.Model):
    """One API key for a provider, used by the client keys of one environment.

    A provider has one per environment, and for a while two during a rotation:
    the newest enabled one of an environment is used, so adding the new key
    switches traffic to it and the old one can be disabled once nothing needs it.
    """

    provider = models.ForeignKey(Provider, on_delete=models.CASCADE, related_name="credentials")
    environment = models.CharField(
        max_length=8, choices=Environment.choices, default=Environment.PROD
    )
    label = models.CharField(max_length=100, blank=True, help_text="e.g. the account or team.")
    api_key_env = models.CharField(
        max_length=128,
        blank=True,
        help_text="Name of the environment variable that holds the API key.",
    )
    # A key given directly (config file or admin) instead of api_key_env, stored
    # encrypted (project.secrets); only its last four characters are shown.
    secret_encrypted = EncryptedTextField(blank=True, editable=False)
    secret_last4 = models.CharField(max_length=4, blank=True, editable=False)
    enabled = models.BooleanField(default=True)
    rotation_days = models.PositiveSmallIntegerField(
        default=30, help_text="Rotate the key every N days (0: no schedule)."
    )
    rotated_at = models.DateTimeField(
        default=timezone.now, help_text="When the key was last replaced."
    )
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)
    created = models.DateTimeField(default=timezone.now)
    code = models.UUIDField(default=uuid4, unique=True, editable=False)

    objects = ProviderCredentialQuerySet.as_manager()

    class Meta:
        ordering = ["provider__name", "environment", "-rotated_at"]
        constraints = [
            models.CheckConstraint(
                condition=Q(environment__in=Environment.values),
                name="routing_providercredential_known_environment",
            ),
            models.CheckConstraint(
                condition=~Q(api_key_env="") | ~Q(secret_encrypted=""),
                name="routing_providercredential_has_source",
            ),
        ]

    def __str__(self) -> str:
        label = f" {self.label}" if self.label else ""
        return f"{self.provider.name} {self.environment}{label} ({self.source})"

    @property
    def source(self) -> str:
        if self.secret_encrypted:
            return f"stored, ending …{self.secret_last4}" if self.secret_last4 else "stored"
        return f"${self.api_key_env}"

    def set_secret(self, raw: str) -> None:
        """Store a new key (encrypted) and restart the rotation clock."""
        self.secret_encrypted = encrypt(raw) if raw else ""
        self.secret_last4 = last4(raw)
        self.rotated_at = timezone.now()

    def stored_secret(self) -> str:
        return decrypt(self.secret_encrypted) if self.secret_encrypted else ""

    def secret(self) -> str:
        """The key to send: the stored one, else the named environment variable's."""
        if self.secret_encrypted:
            return self.stored_secret()
        return os.environ.get(self.api_key_env, "") if self.api_key_env else ""

    @property
    def rotation_due_at(self) -> datetime | None:
        if not self.rotation_days:
            return None
        return self.rotated_at + timedelta(days=self.rotation_days)

    def is_overdue(self, now: datetime | None = None) -> bool:
        due = self.rotation_due_at
        return due is not None and due <= (now or timezone.now())


class ProviderPlan(models.Model):
    """A subscription: a monthly fee with included tokens, then overage by volume tier.

    While a plan is enabled it prices every call to its provider (billing.plans).
    """

    provider = models.OneToOneField(Provider, on_delete=models.CASCADE, related_name="plan")
    monthly_fee_usd = models.DecimalField(
        max_digits=MONEY_MAX_DIGITS, decimal_places=MONEY_DECIMAL_PLACES
    )
    included_tokens = models.PositiveBigIntegerField(help_text="Tokens a month the fee buys.")
    overage_usd_per_mtok = models.DecimalField(
        max_digits=MONEY_MAX_DIGITS,
        decimal_places=MONEY_DECIMAL_PLACES,
        help_text="Price per million tokens past the allowance.",
    )
    volume_tiers = models.JSONField(
        default=list,
        blank=True,
        help_text='Lower overage prices as the month grows: [{"from_tokens": 1000000000, '
        '"usd_per_mtok": "0.45"}]',
    )
    enabled = models.BooleanField(default=True)
    created = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"{self.provider}: ${self.monthly_fee_usd.normalize():f}/month"

    def clean(self) -> None:
        from django.core.exceptions import ValidationError

        try:
            self.info()
        except (KeyError, TypeError, ValueError, ArithmeticError) as exc:
            raise ValidationError(
                {"volume_tiers": f"each tier needs from_tokens and usd_per_mtok ({exc})"}
            ) from None

    def info(self) -> PlanInfo:
        tiers = sorted(
            (
                Tier(int(t["from_tokens"]), Decimal(str(t["usd_per_mtok"])))
                for t in self.volume_tiers
            ),
            key=lambda t: t.from_tokens,
        )
        return PlanInfo(
            provider=self.provider.name,
            monthly_fee_usd=self.monthly_fee_usd,
            included_tokens=self.included_tokens,
            overage_usd_per_mtok=self.overage_usd_per_mtok,
            tiers=tuple(tiers),
        )


class DeploymentQuerySet(models.QuerySet["Deployment"]):
    def enabled(self) -> DeploymentQuerySet:
        return self.filter(enabled=True, provider__enabled=True)


class Deployment(models.Model):
    """A model as one provider serves it, with that provider's prices."""

    class PriceSource(models.TextChoices):
        CONFIG = "config", "Configured"
        LIST = "genai-prices", "Vendor list price (genai-prices)"
        UNKNOWN = "unknown", "Unknown"

    provider = models.ForeignKey(Provider, on_delete=models.CASCADE, related_name="deployments")
    name = models.CharField(max_length=200, help_text="The model id the provider expects.")
    input_usd_per_mtok = models.DecimalField(
        max_digits=MONEY_MAX_DIGITS, decimal_places=MONEY_DECIMAL_PLACES, default=Decimal(0)
    )
    output_usd_per_mtok = models.DecimalField(
        max_digits=MONEY_MAX_DIGITS, decimal_places=MONEY_DECIMAL_PLACES, default=Decimal(0)
    )
    cached_input_usd_per_mtok = models.DecimalField(
        max_digits=MONEY_MAX_DIGITS, decimal_places=MONEY_DECIMAL_PLACES, null=True, blank=True
    )
    price_source = models.CharField(
        max_length=16, choices=PriceSource.choices, default=PriceSource.CONFIG
    )
    # The savings baseline: the model's original vendor's list price (genai-prices).
    direct_vendor = models.SlugField(max_length=64, blank=True)
    direct_model = models.CharField(max_length=200, blank=True)
    direct_input_usd_per_mtok = models.DecimalField(
        max_digits=MONEY_MAX_DIGITS, decimal_places=MONEY_DECIMAL_PLACES, null=True, blank=True
    )
    direct_output_usd_per_mtok = models.DecimalField(
        max_digits=MONEY_MAX_DIGITS, decimal_places=MONEY_DECIMAL_PLACES, null=True, blank=True
    )
    direct_cached_input_usd_per_mtok = models.DecimalField(
        max_digits=MONEY_MAX_DIGITS, decimal_places=MONEY_DECIMAL_PLACES, null=True, blank=True
    )
    context_window = models.PositiveIntegerField(default=128_000)
    max_output_tokens = models.PositiveIntegerField(null=True, blank=True)
    # Our own limits, to stay under the provider's quota (routing.limits); empty: none.
    rpm = models.PositiveIntegerField(
        "requests per minute", null=True, blank=True, help_text="Empty: no limit."
    )
    tpm = models.PositiveIntegerField(
        "tokens per minute", null=True, blank=True, help_text="Empty: no limit."
    )
    # Requests in flight at once across every gateway process (routing.live); past it,
    # a request spills over to the route's next candidate.
    max_concurrency = models.PositiveIntegerField(
        null=True, blank=True, help_text="Requests in flight at once. Empty: no cap."
    )
    enabled = models.BooleanField(default=True)
    created = models.DateTimeField(default=timezone.now)
    code = models.UUIDField(default=uuid4, unique=True, editable=False)

    objects = DeploymentQuerySet.as_manager()

    class Meta:
        ordering = ["provider__name", "name"]
        constraints = [
            models.UniqueConstraint(
                fields=["provider", "name"], name="routing_deployment_one_per_provider_model"
            )
        ]

    def __str__(self) -> str:
        return f"{self.provider.name}/{self.name}"


class Strategy(models.TextChoices):
    """How a route ranks its candidates for each request (routing.selection)."""

    ORDERED = "ordered", "Ordered: the chain's order"
    CHEAPEST = "cheapest", "Cheapest: lowest estimated cost for the request"
    FASTEST = "fastest", "Fastest: lowest rolling latency"
    BALANCED = "balanced", "Balanced: latency, cost, errors, quality and load"


class Route(models.Model):
    """A use case clients name in `model` ("summary"), and the chain that serves it."""

    name = models.SlugField(max_length=64, unique=True)
    description = models.CharField(max_length=200, blank=True)
    environments = models.JSONField(
        default=all_environments,
        help_text="The environments whose client keys may use this route.",
    )
    strategy = models.CharField(max_length=10, choices=Strategy.choices, default=Strategy.ORDERED)
    quality_floor = models.PositiveSmallIntegerField(
        null=True,
        blank=True,
        validators=[MaxValueValidator(100)],
        help_text="Candidates whose rolling quality score (0-100) is below this go last. "
        "Empty: no floor.",
    )
    enabled = models.BooleanField(default=True)
    latency_target_ms = models.PositiveIntegerField(
        null=True,
        blank=True,
        help_text="An answer slower than this loses the quality rule 'slow'; empty: no target.",
    )
    created = models.DateTimeField(default=timezone.now)
    code = models.UUIDField(default=uuid4, unique=True, editable=False)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        from django.core.exceptions import ValidationError

        unknown = sorted(set(self.environments or []) - set(Environment.values))
        if not isinstance(self.environments, list) or unknown or not self.environments:
            raise ValidationError(
                {"environments": f"a non-empty list of {', '.join(Environment.values)}"}
            )

    def chain(self) -> list[Deployment]:
        return [step.deployment for step in self.steps.select_related("deployment__provider")]


class RouteStep(models.Model):
    route = models.ForeignKey(Route, on_delete=models.CASCADE, related_name="steps")
    deployment = models.ForeignKey(Deployment, on_delete=models.CASCADE, related_name="steps")
    position = models.PositiveSmallIntegerField()

    class Meta:
        ordering = ["route", "position"]
        constraints = [
            models.UniqueConstraint(
                fields=["route", "position"], name="routing_routestep_one_per_position"
            ),
            models.UniqueConstraint(
                fields=["route", "deployment"], name="routing_routestep_deployment_once"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.route.name} #{self.position}: {self.deployment}"


def hash_key(raw: str) -> str:
    # The raw key has 190 bits of entropy, so a fast unsalted hash is safe here
    # and lets the gateway find a key by hash without a per-key salt lookup.
    return hashlib.sha256(raw.encode()).hexdigest()


class Organisation(models.Model):
    """A customer whose services call the gateway with client keys.

    What it is feeds every request of its keys without the client saying so: its
    industry is the context's industry (and ``healthcare`` sends the requests to BAA
    providers only, whatever the request's metadata says), and its languages are the
    only ones language detection answers with.
    """

    class Industry(models.TextChoices):
        HEALTHCARE = "healthcare", "Healthcare (HIPAA: BAA providers only)"
        FINANCE = "finance", "Finance"
        INSURANCE = "insurance", "Insurance"
        LEGAL = "legal", "Legal"
        EDUCATION = "education", "Education"
        GOVERNMENT = "government", "Government"
        RETAIL = "retail", "Retail"
        TECHNOLOGY = "technology", "Technology"
        MANUFACTURING = "manufacturing", "Manufacturing"
        MEDIA = "media", "Media"
        OTHER = "other", "Other"

    name = models.CharField(max_length=100, unique=True)
    industry = models.CharField(max_length=20, choices=Industry.choices, blank=True)
    languages = models.JSONField(
        default=list,
        blank=True,
        help_text='ISO 639-1 codes of the languages it serves, e.g. ["en", "de"]; empty: '
        "the SWITCHBOARD_LANGUAGES setting.",
    )
    created = models.DateTimeField(default=timezone.now)
    code = models.UUIDField(default=uuid4, unique=True, editable=False)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        codes = self.languages if isinstance(self.languages, list) else None
        if codes is None or not all(
            isinstance(c, str) and len(c) == 2 and c.isalpha() and c.islower() for c in codes
        ):
            raise ValidationError(
                {"languages": 'A list of two-letter lower-case codes, e.g. ["en", "de"].'}
            )


class ClientKeyQuerySet(models.QuerySet["ClientKey"]):
    def active(self) -> ClientKeyQuerySet:
        return self.filter(revoked_at__isnull=True)


class ClientKey(models.Model):
    """What a calling service presents. Stored hashed; the raw key is shown once."""

    name = models.CharField(max_length=100)
    prefix = models.CharField(max_length=24, editable=False, help_text="Enough to recognise it.")
    key_hash = models.CharField(max_length=64, unique=True, editable=False)
    scopes = models.JSONField(default=list)
    environment = models.CharField(
        max_length=8, choices=Environment.choices, default=Environment.PROD
    )
    revoked_at = models.DateTimeField(null=True, blank=True)
    expires_at = models.DateTimeField(
        null=True, blank=True, help_text="The key stops working at this time (UTC)."
    )
    allowed_models = models.JSONField(
        default=list,
        blank=True,
        help_text="Routes or models this key may ask for; empty allows all.",
    )
    # Rate limits, enforced in Redis across every gateway process (routing.limits).
    rpm = models.PositiveIntegerField(
        "requests per minute", null=True, blank=True, help_text="Empty: no limit."
    )
    tpm = models.PositiveIntegerField(
        "tokens per minute",
        null=True,
        blank=True,
        help_text="Prompt and completion tokens; empty: no limit.",
    )
    max_concurrent = models.PositiveIntegerField(
        "concurrent requests", null=True, blank=True, help_text="Empty: no limit."
    )
    burst = models.PositiveIntegerField(
        null=True,
        blank=True,
        help_text="Requests a key may send at once on top of its per-minute rate, after a "
        "quiet spell; empty: none.",
    )
    organisation = models.ForeignKey(
        Organisation,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="keys",
        help_text="Its industry and languages apply to every request of the key.",
    )
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)
    rotated_from = models.OneToOneField(
        "self",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="successor",
        editable=False,
    )
    created = models.DateTimeField(default=timezone.now)
    code = models.UUIDField(default=uuid4, unique=True, editable=False)

    objects = ClientKeyQuerySet.as_manager()

    class Meta:
        ordering = ["name"]
        constraints = [
            models.CheckConstraint(
                condition=Q(environment__in=Environment.values),
                name="routing_clientkey_known_environment",
            )
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    def assign_new_secret(self) -> str:
        """Give this key a fresh secret; returns the raw key, the only time it exists."""
        raw = f"sb-{self.environment}-{secrets.token_urlsafe(24)}"
        self.prefix = raw[: len(f"sb-{self.environment}-") + 6]
        self.key_hash = hash_key(raw)
        return raw

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None

    def has_scope(self, scope: str) -> bool:
        return scope in self.scopes


class PriceOverride(models.Model):
    """An admin's price for a deployment from a date on; the latest one in effect wins."""

    deployment = models.ForeignKey(
        Deployment, on_delete=models.CASCADE, related_name="price_overrides"
    )
    effective_from = models.DateTimeField(help_text="From when this price applies (UTC).")
    input_usd_per_mtok = models.DecimalField(
        max_digits=MONEY_MAX_DIGITS, decimal_places=MONEY_DECIMAL_PLACES
    )
    output_usd_per_mtok = models.DecimalField(
        max_digits=MONEY_MAX_DIGITS, decimal_places=MONEY_DECIMAL_PLACES
    )
    cached_input_usd_per_mtok = models.DecimalField(
        max_digits=MONEY_MAX_DIGITS, decimal_places=MONEY_DECIMAL_PLACES, null=True, blank=True
    )
    note = models.CharField(max_length=200, blank=True, help_text="Why, e.g. the negotiated rate.")
    created = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["deployment", "-effective_from"]
        constraints = [
            models.UniqueConstraint(
                fields=["deployment", "effective_from"], name="routing_priceoverride_one_per_date"
            )
        ]

    def __str__(self) -> str:
        return f"{self.deployment} from {self.effective_from:%Y-%m-%d %H:%M}"


class BreakerEvent(models.Model):
    """A circuit-breaker transition, copied from Redis by a worker for the admin."""

    deployment = models.ForeignKey(
        Deployment, on_delete=models.CASCADE, related_name="breaker_events"
    )
    from_state = models.CharField(max_length=16)
    to_state = models.CharField(max_length=16)
    reason = models.CharField(max_length=200, blank=True)
    created = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created"]
        # Serves the admin's "latest transitions of this deployment" list.
        indexes = [models.Index(fields=["deployment", "-created"], name="routing_breaker_recent")]
        constraints = [
            # A copy job that dies before trimming Redis copies the same transitions again.
            models.UniqueConstraint(
                fields=["deployment", "created", "to_state"], name="routing_breakerevent_once"
            )
        ]

    def __str__(self) -> str:
        return f"{self.deployment}: {self.from_state} → {self.to_state}"


class ProbeResult(models.Model):
    """One health probe of a deployment (routing/health.py): what it answered, and how fast."""

    deployment = models.ForeignKey(
        Deployment, on_delete=models.CASCADE, related_name="probe_results"
    )
    created = models.DateTimeField(default=timezone.now)
    ok = models.BooleanField()
    status_code = models.PositiveSmallIntegerField(
        null=True, blank=True, help_text="The provider's HTTP status; empty when none arrived."
    )
    latency_ms = models.PositiveIntegerField(help_text="From sending the probe to its answer.")
    error_code = models.CharField(max_length=64, blank=True)
    # The provider's own message, scrubbed of anything shaped like a key.
    error = models.CharField(max_length=300, blank=True)
    # What the probe's tokens cost at the deployment's price: probing is not free.
    cost_usd = models.DecimalField(
        max_digits=MONEY_MAX_DIGITS, decimal_places=MONEY_DECIMAL_PLACES, null=True, blank=True
    )

    class Meta:
        ordering = ["-created"]
        indexes = [
            # Serves the state after each probe (a deployment's latest probes) and the
            # status page's per-deployment windows (24 h latency, 24 h and 30 day uptime).
            models.Index(fields=["deployment", "-created"], name="routing_probe_recent"),
            # Serves the retention purge: every probe older than the cut-off.
            models.Index(fields=["created"], name="routing_probe_created"),
        ]

    def __str__(self) -> str:
        outcome = "ok" if self.ok else f"failed ({self.error_code or self.status_code})"
        return f"{self.deployment} {self.created:%Y-%m-%d %H:%M:%S}: {outcome}"


class DeploymentHealth(models.Model):
    """A deployment's state as its health probes show it.

    Changed only by a conditional UPDATE on the state it was read in
    (`routing.health.record_probe`), so of two workers that see the same change
    one moves it, and only that one raises the alert.
    """

    class State(models.TextChoices):
        UNKNOWN = "unknown", "Unknown"  # not probed yet
        UP = "up", "Up"
        DEGRADED = "degraded", "Degraded"
        DOWN = "down", "Down"

    deployment = models.OneToOneField(
        Deployment, on_delete=models.CASCADE, primary_key=True, related_name="health"
    )
    state = models.CharField(max_length=10, choices=State.choices, default=State.UNKNOWN)
    since = models.DateTimeField(default=timezone.now, help_text="When it entered this state.")
    reason = models.CharField(max_length=200, blank=True)
    checked_at = models.DateTimeField(null=True, blank=True, help_text="Its latest probe.")
    created = models.DateTimeField(default=timezone.now)

    class Meta:
        verbose_name = "provider status"
        verbose_name_plural = "provider status"

    def __str__(self) -> str:
        return f"{self.deployment}: {self.state}"


# -- batch jobs (routing/batches/ runs them) --------------------------------------------


class BatchQuerySet(models.QuerySet["Batch"]):
    def of_key(self, key: ClientKey) -> BatchQuerySet:
        return self.filter(client_key=key)

    def unfinished(self) -> BatchQuerySet:
        return self.filter(status__in=Batch.UNFINISHED)

    def item_counts(self) -> dict[int, dict[str, int]]:
        """How many items of each batch here are in each status (zeros included), in one query."""
        counts = {
            pk: dict.fromkeys(BatchItem.Status.values, 0)
            for pk in self.values_list("pk", flat=True)
        }
        rows = (
            BatchItem.objects.filter(batch_id__in=list(counts))
            .values_list("batch_id", "status")
            .annotate(n=models.Count("id"))
            .order_by()
        )
        for batch_id, status, n in rows:
            counts[batch_id][status] = n
        return counts


class Batch(models.Model):
    """Up to 10,000 chat requests of one client key, run by a worker at low priority."""

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        COMPLETED = "completed", "Completed"
        CANCELLED = "cancelled", "Cancelled"
        FAILED = "failed", "Failed"

    UNFINISHED = (Status.QUEUED, Status.RUNNING)
    FINISHED = (Status.COMPLETED, Status.CANCELLED, Status.FAILED)

    code = models.UUIDField(default=uuid4, unique=True, editable=False)
    client_key = models.ForeignKey(ClientKey, on_delete=models.CASCADE, related_name="batches")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.QUEUED)
    route = models.CharField(
        max_length=200,
        blank=True,
        help_text="Sent to this route (or model) instead of each request's own `model`, "
        "e.g. a cheaper one.",
    )
    total = models.PositiveIntegerField(default=0)
    error = models.CharField(max_length=300, blank=True, help_text="Why the batch failed.")
    created = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    objects = BatchQuerySet.as_manager()

    class Meta:
        ordering = ["-created"]
        verbose_name_plural = "batches"
        indexes = [
            # Serves GET /api/v1/batches: one key's batches, newest first.
            models.Index(fields=["client_key", "-created"], name="routing_batch_key_recent"),
            # Serves the resumer's scan for queued and running batches.
            models.Index(fields=["status"], name="routing_batch_status"),
        ]
        constraints = [
            models.CheckConstraint(
                condition=Q(status__in=["queued", "running", "completed", "cancelled", "failed"]),
                name="routing_batch_known_status",
            )
        ]

    def __str__(self) -> str:
        return f"batch {self.code} ({self.status}, {self.total} requests)"

    @property
    def is_finished(self) -> bool:
        return self.status in self.FINISHED


class BatchItem(models.Model):
    """One request of a batch, and what became of it."""

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        RUNNING = "running", "Running"
        ANSWERED = "answered", "Answered"
        FAILED = "failed", "Failed"
        CANCELLED = "cancelled", "Cancelled"

    SETTLED = (Status.ANSWERED, Status.FAILED, Status.CANCELLED)

    batch = models.ForeignKey(Batch, on_delete=models.CASCADE, related_name="items")
    index = models.PositiveIntegerField(help_text="Its position in the submission, from 0.")
    custom_id = models.CharField(max_length=64, blank=True)
    request = models.JSONField(help_text="The chat request as submitted (validated).")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    response = models.JSONField(null=True, blank=True, help_text="The chat.completion body.")
    error = models.JSONField(null=True, blank=True, help_text='{"code", "message", "status"}')
    # The ledger's request id of the latest attempt: "batch-<code>-<index>-<attempt>".
    request_id = models.CharField(max_length=64, blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["batch", "index"]
        indexes = [
            # Serves the runner's next pending items and the progress counts by status.
            models.Index(fields=["batch", "status", "index"], name="routing_batchitem_status"),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["batch", "index"], name="routing_batchitem_one_per_index"
            ),
            # One ledger row per attempt: the ledger is unique on the request id too.
            models.UniqueConstraint(
                fields=["request_id"],
                condition=~Q(request_id=""),
                name="routing_batchitem_one_per_request_id",
            ),
            models.CheckConstraint(
                condition=Q(status__in=["pending", "running", "answered", "failed", "cancelled"]),
                name="routing_batchitem_known_status",
            ),
        ]

    def __str__(self) -> str:
        label = f" ({self.custom_id})" if self.custom_id else ""
        return f"item {self.index}{label} of batch {self.batch.code}: {self.status}"


# -- monitoring (routing/monitoring.py, routing/monitoring_admin.py) ---------------------


class Monitoring(UsageRecord):
    """The monitoring dashboard and the performance report in the admin: a proxy of the
    ledger they read, so that the pages have a view permission of their own."""

    class Meta:
        proxy = True
        verbose_name = "monitoring dashboard"
        verbose_name_plural = "monitoring"


# Experiments and rollouts live in their own module; importing them here makes them this app's.
from routing.experiments.models import (  # noqa: E402
    Experiment as Experiment,
)
from routing.experiments.models import (  # noqa: E402
    Rollout as Rollout,
)
from routing.experiments.models import (  # noqa: E402
    RolloutEvent as RolloutEvent,
)
from routing.experiments.models import (  # noqa: E402
    Variant as Variant,
)

# Quality's models (routing/quality/models.py) belong to this app.
from routing.quality.models import Feedback, JudgeScore, QualityRule  # noqa: E402, F401


def _no_items() -> list[str]:
    return []


class RoutingRule(models.Model):
    """Conditions on a request's context, and what to do when they hold (routing.rules).

    Every enabled rule whose conditions all hold applies, in priority order (lowest
    number first); each setting comes from the first matching rule that sets it,
    and filters add up. An empty condition matches anything.
    """

    name = models.CharField(max_length=100, unique=True)
    description = models.CharField(max_length=200, blank=True)
    priority = models.PositiveSmallIntegerField(
        default=100, help_text="Lower numbers apply first and win a setting."
    )
    enabled = models.BooleanField(default=True)
    # Conditions: a list holds when the context's value is one of its items.
    meeting_types = models.JSONField(default=_no_items, blank=True)
    industries = models.JSONField(default=_no_items, blank=True)
    languages = models.JSONField(default=_no_items, blank=True)
    participant_bands = models.JSONField(
        default=_no_items, blank=True, help_text="Of 1-2, 3-5, 6-10, 11+."
    )
    use_cases = models.JSONField(
        default=_no_items, blank=True, help_text="metadata use_case, or the route asked for."
    )
    client_keys = models.JSONField(default=_no_items, blank=True, help_text="Client key names.")
    min_transcript_chars = models.PositiveIntegerField(null=True, blank=True)
    max_transcript_chars = models.PositiveIntegerField(null=True, blank=True)
    # Actions.
    route = models.SlugField(
        max_length=64, blank=True, help_text="Serve the request by this route instead."
    )
    only = models.JSONField(
        default=_no_items,
        blank=True,
        help_text="Keep only these candidates: provider names or provider/model labels.",
    )
    exclude = models.JSONField(
        default=_no_items, blank=True, help_text="Drop these candidates (providers or labels)."
    )
    prefer = models.JSONField(
        default=_no_items,
        blank=True,
        help_text="Move these candidates first, in this order (providers or labels).",
    )
    max_tokens = models.PositiveIntegerField(
        null=True, blank=True, help_text="max_tokens for requests that set none."
    )
    max_tokens_per_participant = models.PositiveIntegerField(
        null=True,
        blank=True,
        help_text="Adds this many max_tokens per participant to max_tokens (the base).",
    )
    max_tokens_cap = models.PositiveIntegerField(
        null=True, blank=True, help_text="The most the per-participant formula gives."
    )
    long_context_deployment = models.CharField(
        max_length=200, blank=True, help_text="provider/model tried first above the length below."
    )
    long_context_above_chars = models.PositiveIntegerField(null=True, blank=True)
    created = models.DateTimeField(default=timezone.now)
    code = models.UUIDField(default=uuid4, unique=True, editable=False)

    class Meta:
        ordering = ["priority", "name"]

    def __str__(self) -> str:
        return f"{self.priority}: {self.name}"

    def clean(self) -> None:
        from routing.rules import check_rule

        check_rule(self)
