import uuid

import django.db.models.deletion
import django.utils.timezone
from django.db import migrations, models

import project.secrets
import routing.models

ENVIRONMENTS = ("dev", "staging", "prod")


def keys_to_credentials(apps, schema_editor):
    """Each provider's one key becomes a credential for every environment, as it served all."""
    Provider = apps.get_model("routing", "Provider")
    ProviderCredential = apps.get_model("routing", "ProviderCredential")
    for provider in Provider.objects.all():
        if not provider.api_key_env and not provider.api_key_encrypted:
            continue
        for environment in ENVIRONMENTS:
            ProviderCredential.objects.create(
                provider=provider,
                environment=environment,
                api_key_env=provider.api_key_env if not provider.api_key_encrypted else "",
                secret_encrypted=provider.api_key_encrypted,  # the same token: no decryption
                secret_last4=provider.api_key_last4,
                rotated_at=provider.created,
            )


def credentials_to_keys(apps, schema_editor):
    Provider = apps.get_model("routing", "Provider")
    for provider in Provider.objects.prefetch_related("credentials"):
        credential = next(
            (c for c in provider.credentials.all() if c.enabled and c.environment == "prod"), None
        )
        if credential is not None:
            provider.api_key_env = credential.api_key_env
            provider.api_key_encrypted = credential.secret_encrypted
            provider.api_key_last4 = credential.secret_last4
            provider.save()


class Migration(migrations.Migration):
    dependencies = [
        ("routing", "0006_client_key_lifecycle"),
    ]

    operations = [
        migrations.AddField(
            model_name="provider",
            name="baa_signed",
            field=models.BooleanField(
                default=False,
                help_text="A HIPAA Business Associate Agreement is signed: healthcare requests may go here.",
            ),
        ),
        migrations.AddField(
            model_name="provider",
            name="data_region",
            field=models.CharField(
                choices=[
                    ("us", "United States"),
                    ("eu", "European Union"),
                    ("other", "Elsewhere / global"),
                ],
                default="us",
                help_text="Where the provider processes data; EU-only requests go to EU providers only.",
                max_length=8,
            ),
        ),
        migrations.AddField(
            model_name="route",
            name="environments",
            field=models.JSONField(
                default=routing.models.all_environments,
                help_text="The environments whose client keys may use this route.",
            ),
        ),
        migrations.CreateModel(
            name="ProviderCredential",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                (
                    "environment",
                    models.CharField(
                        choices=[
                            ("dev", "Development"),
                            ("staging", "Staging"),
                            ("prod", "Production"),
                        ],
                        default="prod",
                        max_length=8,
                    ),
                ),
                (
                    "label",
                    models.CharField(
                        blank=True, help_text="e.g. the account or team.", max_length=100
                    ),
                ),
                (
                    "api_key_env",
                    models.CharField(
                        blank=True,
                        help_text="Name of the environment variable that holds the API key.",
                        max_length=128,
                    ),
                ),
                (
                    "secret_encrypted",
                    project.secrets.EncryptedTextField(blank=True, editable=False),
                ),
                ("secret_last4", models.CharField(blank=True, editable=False, max_length=4)),
                ("enabled", models.BooleanField(default=True)),
                (
                    "rotation_days",
                    models.PositiveSmallIntegerField(
                        default=30, help_text="Rotate the key every N days (0: no schedule)."
                    ),
                ),
                (
                    "rotated_at",
                    models.DateTimeField(
                        default=django.utils.timezone.now,
                        help_text="When the key was last replaced.",
                    ),
                ),
                ("last_used_at", models.DateTimeField(blank=True, editable=False, null=True)),
                ("created", models.DateTimeField(default=django.utils.timezone.now)),
                ("code", models.UUIDField(default=uuid.uuid4, editable=False, unique=True)),
                (
                    "provider",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="credentials",
                        to="routing.provider",
                    ),
                ),
            ],
            options={
                "ordering": ["provider__name", "environment", "-rotated_at"],
                "constraints": [
                    models.CheckConstraint(
                        condition=models.Q(("environment__in", ["dev", "staging", "prod"])),
                        name="routing_providercredential_known_environment",
                    ),
                    models.CheckConstraint(
                        condition=models.Q(
                            models.Q(("api_key_env", ""), _negated=True),
                            models.Q(("secret_encrypted", ""), _negated=True),
                            _connector="OR",
                        ),
                        name="routing_providercredential_has_source",
                    ),
                ],
            },
        ),
        migrations.RunPython(keys_to_credentials, credentials_to_keys),
        migrations.RemoveField(
            model_name="provider",
            name="api_key_encrypted",
        ),
        migrations.RemoveField(
            model_name="provider",
            name="api_key_env",
        ),
        migrations.RemoveField(
            model_name="provider",
            name="api_key_last4",
        ),
    ]
