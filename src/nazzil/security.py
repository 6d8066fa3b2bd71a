"""Wire nazzil's protections into the app: proxies, address policy, tokens, limits, headers."""

from __future__ import annotations

from flask import Flask
from werkzeug.middleware.proxy_fix import ProxyFix

from . import access, headers, limits, netguard


def init_app(app: Flask) -> None:
    """Install every protection; no I/O (the rate-limit store connects on first use)."""
    # Parse TRUSTED_HOSTS now, so a typo stops the start instead of failing every request.
    netguard.policy_for(app)
    hops = int(app.config.get("NAZZIL_PROXY_HOPS") or 0)
    if hops > 0:
        # Trust exactly `hops` proxies' X-Forwarded-For/-Proto; a client cannot forge more.
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops)  # type: ignore[method-assign]
    # Order matters: tokens are checked before a request counts against a rate limit.
    access.init_app(app)
    limits.init_app(app)
    headers.init_app(app)
