"""Rate limits per device and per client address for previews, jobs, streams and logins."""

from __future__ import annotations

import ipaddress
import logging
import re
import time
from collections.abc import Callable

from flask import Flask, Response, current_app, g, request
from flask_limiter import ApplicationLimit, HeaderNames, Limiter

from . import device

log = logging.getLogger(__name__)

# bucket -> the setting that holds its limit; the same limit applies to each key separately.
BUCKETS: dict[str, str] = {
    "preview": "NAZZIL_RATE_LIMIT_PREVIEW",
    "jobs": "NAZZIL_RATE_LIMIT_JOBS",
    "stream": "NAZZIL_RATE_LIMIT_STREAM",
    "login": "NAZZIL_RATE_LIMIT_LOGIN",
}
# Logins are counted per address only: a device cookie is what a stranger does not have yet.
KEYS: dict[str, tuple[str, ...]] = {
    "preview": ("device", "address"),
    "jobs": ("device", "address"),
    "stream": ("device", "address"),
    "login": ("address",),
}
_RETRY = re.compile(r"/api/v1/jobs/[^/]+/retry")
# The draft IETF names (RateLimit-*) instead of Flask-Limiter's default X-RateLimit-*.
HEADER_NAMES = {
    HeaderNames.LIMIT: "RateLimit-Limit",
    HeaderNames.REMAINING: "RateLimit-Remaining",
    HeaderNames.RESET: "RateLimit-Reset",
    HeaderNames.RETRY_AFTER: "Retry-After",
}


def bucket_of(path: str, method: str, args: dict | None = None) -> str | None:
    """Name the rate-limit bucket of a request, or None when it is not limited."""
    args = args or {}
    if path in ("/api/v1/info", "/preview"):
        return "preview"
    if path == "/" and any(args.get(name) for name in ("url", "text", "title")):
        return "preview"  # the page renders the preview on the server
    if method == "POST" and (path == "/api/v1/jobs" or _RETRY.fullmatch(path)):
        return "jobs"
    if path == "/api/v1/stream" or path.startswith("/api/v1/stream/"):
        return "stream"
    if path == "/login" and method == "POST":
        return "login"
    return None


def _bucket() -> str | None:
    if "rate_bucket" not in g:
        g.rate_bucket = bucket_of(request.path, request.method, request.args)
    return g.rate_bucket


def client_address() -> str:
    """Return the client address used as a rate-limit key (an IPv6 client by its /64)."""
    # remote_addr is the X-Forwarded-For hop chosen by ProxyFix when PROXY_HOPS > 0.
    raw = request.remote_addr or "unknown"
    try:
        ip = ipaddress.ip_address(raw)
    except ValueError:
        return raw
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is None:
        # One subscriber usually holds a whole /64: counting single addresses is no limit.
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) else ip)


def _device_key() -> str | None:
    """Return the device id of a client that already has a valid device cookie."""
    if "rate_device" not in g:
        g.rate_device = None
        if request.cookies.get(device.COOKIE):
            device_id = device.get_device_id()
            if not g.get("device_is_new"):
                g.rate_device = device_id
    return g.rate_device


def _limit(bucket: str, key: str) -> ApplicationLimit:
    setting = BUCKETS[bucket]

    def provider() -> str:
        return current_app.config.get(setting) or ""

    def exempt() -> bool:
        if _bucket() != bucket:
            return True
        return key == "device" and _device_key() is None

    key_function: Callable[[], str]
    if key == "device":
        key_function = lambda: f"device:{_device_key()}"  # noqa: E731
    else:
        key_function = lambda: f"addr:{client_address()}"  # noqa: E731
    return ApplicationLimit(
        provider,
        key_function=key_function,
        scope=f"{bucket}:{key}",
        exempt_when=exempt,
        error_message="Too many requests; please wait a moment.",
    )


def storage_uri(config: dict) -> str:
    """Pick where counters live: the configured URI, else Redis in a cluster, else memory."""
    return config.get("NAZZIL_RATE_LIMIT_STORAGE") or config.get("NAZZIL_REDIS_URL") or "memory://"


def _tidy_headers(response: Response) -> Response:
    """Keep Retry-After for refusals only, and give RateLimit-Reset as seconds from now."""
    # Flask-Limiter sends Retry-After on every limited answer and Reset as a Unix time; the
    # draft RateLimit-Reset is a delay, and Retry-After on a 200 would confuse clients.
    if response.status_code not in (429, 503):
        response.headers.pop("Retry-After", None)
    reset = response.headers.get("RateLimit-Reset")
    if reset and reset.isdigit():
        response.headers["RateLimit-Reset"] = str(max(0, int(reset) - int(time.time())))
    return response


def init_app(app: Flask) -> None:
    """Attach Flask-Limiter with nazzil's buckets; counters are touched on first request only."""
    limits = [_limit(bucket, key) for bucket, keys in KEYS.items() for key in keys]
    uri = storage_uri(app.config)
    # Registered before the limiter's own after_request, so it runs after it (reverse order).
    app.after_request(_tidy_headers)
    limiter = Limiter(
        key_func=client_address,
        application_limits=limits,
        headers_enabled=True,
        header_name_mapping=HEADER_NAMES,
        storage_uri=uri,
        # A Redis outage must not take the site down: count in memory until it is back.
        in_memory_fallback_enabled=uri != "memory://",
        key_prefix="nazzil",
        strategy="fixed-window",
    )
    limiter.init_app(app)
    app.extensions["nazzil"]["limiter"] = limiter
