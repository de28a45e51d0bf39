from urllib.parse import urlsplit

from django.db import migrations, models

import project.secrets


def encrypt_targets(apps, schema_editor):
    from project.secrets import encrypt

    Channel = apps.get_model("project", "Channel")
    for channel in Channel.objects.all():
        channel.target_encrypted = encrypt(channel.target)
        channel.target_shown = shown(channel.target)
        channel.save(update_fields=["target_encrypted", "target_shown"])


def decrypt_targets(apps, schema_editor):
    from project.secrets import decrypt

    Channel = apps.get_model("project", "Channel")
    for channel in Channel.objects.all():
        channel.target = decrypt(channel.target_encrypted)
        channel.save(update_fields=["target"])


def shown(value):
    if "://" not in value:
        return value
    parts = urlsplit(value)
    return f"{parts.scheme}://{parts.hostname or '?'}{f':{parts.port}' if parts.port else ''}/…"


class Migration(migrations.Migration):
    dependencies = [
        ("project", "0002_roles"),
    ]

    operations = [
        migrations.AddField(
            model_name="channel",
            name="target_encrypted",
            field=project.secrets.EncryptedTextField(default="", editable=False),
            preserve_default=False,
        ),
        migrations.AddField(
            model_name="channel",
            name="target_shown",
            field=models.CharField(default="", editable=False, max_length=500),
            preserve_default=False,
        ),
        migrations.RunPython(encrypt_targets, decrypt_targets),
        migrations.RemoveField(model_name="channel", name="target"),
    ]
