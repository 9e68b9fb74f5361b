"""ASGI entry point: HTTP through Django, WebSockets through Channels behind session auth."""

from __future__ import annotations

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "dashboard.settings")
django_asgi_app = get_asgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402

from dashboard.middleware import AsgiBodySizeLimit  # noqa: E402
from dashboard.routing import websocket_urlpatterns  # noqa: E402
from dashboard.sso.discovery import check_at_startup  # noqa: E402
from dashboard.startup import freeze_startup_heap  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": AsgiBodySizeLimit(django_asgi_app),
        "websocket": AllowedHostsOriginValidator(
            AuthMiddlewareStack(URLRouter(websocket_urlpatterns))
        ),
    }
)

check_at_startup()
freeze_startup_heap()
