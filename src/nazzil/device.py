"""The device id: created on the first request that needs it, kept in a signed cookie."""

from __future__ import annotations

import secrets

from flask import Flask, Response, current_app, g, request
from itsdangerous import BadSignature, URLSafeSerializer

from .datadir import secret_key

COOKIE = "nazzil_device"
MAX_AGE = 400 * 86400  # browsers cap cookie lifetime at 400 days


def _serializer() -> URLSafeSerializer:
    return URLSafeSerializer(secret_key(current_app), salt="nazzil-device")


def get_device_id() -> str:
    """Return this client's device id, minting one (and its cookie) on first need."""
    if "device_id" in g:
        return g.device_id
    device_id = None
    raw = request.cookies.get(COOKIE)
    if raw:
        try:
            value = _serializer().loads(raw)
            if isinstance(value, str) and 8 <= len(value) <= 64:
                device_id = value
        except BadSignature:
            device_id = None
    if device_id is None:
        device_id = secrets.token_urlsafe(16)
        g.device_is_new = True
    g.device_id = device_id
    return device_id


def _set_cookie(response: Response) -> Response:
    if g.get("device_is_new"):
        response.set_cookie(
            COOKIE,
            _serializer().dumps(g.device_id),
            max_age=MAX_AGE,
            httponly=True,
            samesite="Lax",
            secure=request.is_secure,
        )
    return response


def init_app(app: Flask) -> None:
    """Send the cookie of a device minted during the request."""
    app.after_request(_set_cookie)
