"""Rate limits per device and per client address for previews, jobs, streams and logins."""

from __future__ import annotations

import functools
import ipaddress
import logging
import math
import re
import time
from typing import Any

from flask import Flask, Response, current_app, g, request

from . import device
from .errors import RateLimited
from .state import once

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
    if not request.cookies.get(device.COOKIE):
        return None
    device_id = device.get_device_id()
    return None if g.get("device_is_new") else device_id


def storage_uri(config: dict) -> str:
    """Pick where counters live: the configured URI, else Redis in a cluster, else memory."""
    return config.get("NAZZIL_RATE_LIMIT_STORAGE") or config.get("NAZZIL_REDIS_URL") or "memory://"


@functools.lru_cache(maxsize=64)
def _items(rate: str) -> tuple[Any, ...]:
    from limits import parse_many

    return tuple(parse_many(rate))


def _make(uri: str) -> Any:
    from limits import storage, strategies

    return strategies.FixedWindowRateLimiter(storage.storage_from_string(uri))


def _hit(app: Flask, item: Any, *ids: str) -> tuple[bool, Any]:
    """Count one hit; return whether it is allowed and the window's stats."""
    # The `limits` counters are built on first use; memory stands in while Redis fails.
    uri = storage_uri(app.config)
    try:
        limiter = once(app, "rate_limiter", lambda: _make(uri))
        return limiter.hit(item, *ids), limiter.get_window_stats(item, *ids)
    except Exception as exc:  # noqa: BLE001 - a Redis outage must not take the site down
        if uri == "memory://":
            raise
        log.warning("rate-limit storage %s failed (%s); counting in memory", uri, exc)
        limiter = once(app, "rate_limiter_memory", lambda: _make("memory://"))
        return limiter.hit(item, *ids), limiter.get_window_stats(item, *ids)


def _keys(bucket: str) -> list[str]:
    keys = []
    for kind in KEYS[bucket]:
        if kind == "device":
            device_id = _device_key()
            if device_id is not None:
                keys.append(f"device:{device_id}")
        else:
            keys.append(f"addr:{client_address()}")
    return keys


def _check() -> None:
    """Count this request against its bucket; refuse it with 429 when a limit is spent."""
    bucket = bucket_of(request.path, request.method, request.args)
    if bucket is None:
        return
    rate = current_app.config.get(BUCKETS[bucket]) or ""
    if not rate:
        return
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    keys = _keys(bucket)
    tightest: tuple[int, int, float] | None = None  # (remaining, limit, reset time)
    for item in _items(rate):
        for key in keys:
            allowed, stats = _hit(app, item, "nazzil", bucket, key)
            state = (0 if not allowed else stats.remaining, item.amount, stats.reset_time)
            if tightest is None or state[0] < tightest[0]:
                tightest = state
            if not allowed:
                raise RateLimited(headers=_headers(state, refused=True))
    if tightest is not None:
        g.rate_headers = _headers(tightest, refused=False)


def _headers(state: tuple[int, int, float], *, refused: bool) -> dict[str, str]:
    remaining, limit, reset_time = state
    # The draft IETF RateLimit-Reset is a delay in seconds, not a timestamp.
    reset = max(1, math.ceil(reset_time - time.time()))
    headers = {
        "RateLimit-Limit": str(limit),
        "RateLimit-Remaining": str(remaining),
        "RateLimit-Reset": str(reset),
    }
    if refused:
        headers["Retry-After"] = str(reset)
    return headers


def _add_headers(response: Response) -> Response:
    for name, value in (g.get("rate_headers") or {}).items():
        response.headers.setdefault(name, value)
    return response


def init_app(app: Flask) -> None:
    """Count previews, jobs, streams and logins; the counter store is built on first use."""
    app.before_request(_check)
    app.after_request(_add_headers)
