"""How an alert reaches a channel: a base class, one class per channel kind, a registry.

The shape is healthchecks' `hc/api/transports.py`. A transport returns the
HTTP status it got (None where there is none) or raises `TransportError` with
a message that is safe to store and log: never the webhook URL, which may
hold a secret token.
"""

from __future__ import annotations

import json
import smtplib
from typing import Any, ClassVar
from urllib.parse import parse_qsl, urlsplit

from django.conf import settings
from django.core.mail import send_mail
from django.core.serializers.json import DjangoJSONEncoder
from django.utils.module_loading import import_string

from project.models import Alert, Channel

SLACK_SECTION_LIMIT = 3000  # characters in one Slack section block


class TransportError(Exception):
    def __init__(self, message: str, status_code: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status_code = status_code


class Transport:
    kind: ClassVar[str]

    def __init__(self, channel: Channel) -> None:
        self.channel = channel

    def notify(self, alert: Alert) -> int | None:
        """Send the alert; return its HTTP status (None if none), or raise TransportError."""
        raise NotImplementedError


class Email(Transport):
    kind = Channel.Kind.EMAIL

    def notify(self, alert: Alert) -> int | None:
        subject = f"[Switchboard {alert.severity}] {alert.title}"
        lines = [alert.body, "", f"Kind: {alert.kind}", f"Subject: {alert.subject}"]
        if alert.period:
            lines.append(f"Period: {alert.period}")
        if alert.threshold:
            lines.append(f"Threshold: {alert.threshold}")
        try:
            send_mail(subject, "\n".join(lines).strip(), None, [self.channel.target])
        except (smtplib.SMTPException, OSError) as exc:
            raise TransportError(
                f"the mail server refused or failed ({type(exc).__name__})"
            ) from None
        return None


class Webhook(Transport):
    """A Slack-compatible incoming webhook: `text` and `blocks`, plus our own `switchboard` key."""

    kind = Channel.Kind.WEBHOOK

    def payload(self, alert: Alert) -> dict[str, Any]:
        headline = f"[{alert.severity.upper()}] {alert.title}"
        context = " · ".join(part for part in (alert.kind, alert.subject, alert.period) if part)
        section = f"*{alert.title}*\n{alert.body}".strip()[:SLACK_SECTION_LIMIT]
        payload = {
            "text": headline,
            "blocks": [
                {"type": "section", "text": {"type": "mrkdwn", "text": section}},
                {"type": "context", "elements": [{"type": "mrkdwn", "text": context}]},
            ],
            "switchboard": alert.payload(),
        }
        # An alert not yet read back from the database may still hold Decimals in `data`.
        result: dict[str, Any] = json.loads(json.dumps(payload, cls=DjangoJSONEncoder))
        return result

    def notify(self, alert: Alert) -> int | None:
        # routing.http owns the HTTP clients; project imports no app, so it is named by setting.
        post_json = import_string(settings.SWITCHBOARD_ALERT_HTTP)
        url = self.channel.target
        try:
            status, text = post_json(url, self.payload(alert), settings.SWITCHBOARD_ALERT_TIMEOUT)
        except OSError as exc:  # TimeoutError, ConnectionError: messages name no URL
            raise TransportError(redact(str(exc), url)) from None
        if not 200 <= status < 300:
            detail = " ".join(text.split())[:200]
            message = f"HTTP {status}: {detail}" if detail else f"HTTP {status}"
            raise TransportError(redact(message, url), status)
        return int(status)


TRANSPORTS: dict[str, type[Transport]] = {cls.kind: cls for cls in (Email, Webhook)}


def transport_for(channel: Channel) -> Transport:
    return TRANSPORTS[channel.kind](channel)


def redact(text: str, url: str) -> str:
    """Remove every part of a URL that could be its secret (a receiver may echo its path)."""
    parts = urlsplit(url)
    secrets = {url, parts.path, parts.query, parts.password or ""}
    secrets.update(segment for segment in parts.path.split("/"))
    secrets.update(value for _, value in parse_qsl(parts.query))
    for secret in sorted((s for s in secrets if len(s) >= 6), key=len, reverse=True):
        text = text.replace(secret, "…")
    return text
