"""The ASGI entry point: the OpenAI-compatible gateway plus Django.

Requests under ``/v1/`` go straight to the gateway's ASGI shell
(``routing.gateway``); everything else (admin, DRF API, metrics, health) goes
through Django. The gateway path skips Django's request cycle on purpose: its
middleware stack and the sync ``request_started`` signal cost a thread hop and
about a millisecond per request, which is most of the overhead budget.
"""

from __future__ import annotations

import os
from typing import Any

from django.conf import settings
from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")

django_application = get_asgi_application()
if settings.DEBUG:
    # Development serves the admin's and the dashboards' static files itself;
    # production collects them (collectstatic) behind its proxy.
    from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler

    django_application = ASGIStaticFilesHandler(django_application)

from routing.gateway import GatewayApp  # noqa: E402  (needs settings loaded)

gateway_application = GatewayApp()


async def application(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "http" and scope["path"].startswith("/v1/"):
        await gateway_application(scope, receive, send)
    elif scope["type"] == "lifespan":
        await gateway_application.lifespan(scope, receive, send)
    else:
        await django_application(scope, receive, send)
