"""The JSON API, version 1."""

from __future__ import annotations

import json
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request

from .. import __version__
from ..errors import InvalidRequest, Unavailable

bp = Blueprint("api", __name__)


def json_body() -> dict[str, Any]:
    """Return the request body as a JSON object, or raise invalid_request."""
    raw = request.get_data(cache=True)
    try:
        body = json.loads(raw) if raw else None
    except (ValueError, UnicodeDecodeError, RecursionError):  # [[[[… nested deeper than Python
        raise InvalidRequest("The body must be a JSON object.") from None
    if not isinstance(body, dict):
        raise InvalidRequest("The body must be a JSON object.")
    return body


def field(
    body: dict[str, Any],
    name: str,
    kind: type | tuple[type, ...],
    *,
    required: bool = False,
    default: Any = None,
) -> Any:
    """Return a typed field of a JSON body; the error names the field."""
    if name not in body or body[name] is None:
        if required:
            raise InvalidRequest(f"The field '{name}' is required.")
        return default
    value = body[name]
    # bool is an int in Python, never a number in an API.
    if not isinstance(value, kind) or (isinstance(value, bool) and bool not in _as_tuple(kind)):
        names = " or ".join(
            t.__name__.replace("str", "string").replace("float", "number") for t in _as_tuple(kind)
        )
        raise InvalidRequest(f"The field '{name}' must be a {names}.")
    return value


def _as_tuple(kind: type | tuple[type, ...]) -> tuple[type, ...]:
    return kind if isinstance(kind, tuple) else (kind,)


@bp.get("/healthz")
def healthz() -> Response:
    """Say the process is up; no I/O."""
    return jsonify(status="ok", version=__version__)


@bp.get("/readyz")
def readyz() -> tuple[Response, int] | Response:
    """Say whether the parts this deployment needs answer."""
    failed = []
    for name, check in current_app.extensions["nazzil"].get("ready_checks", {}).items():
        try:
            check(current_app)
        except Exception:  # noqa: BLE001 - a failing part is reported, not raised
            current_app.logger.warning("readiness check %s failed", name, exc_info=True)
            failed.append(name)
    if failed:
        raise Unavailable(f"Not ready: {', '.join(failed)} did not answer.")
    return jsonify(status="ready", mode=current_app.config["NAZZIL_MODE"])


@bp.route("/api/v1/info", methods=["GET", "POST"])
def info() -> Response:
    """Preview what is at a URL: title, thumbnail, duration, formats."""
    if request.method == "GET":
        url = request.args.get("url")
        if url is None:
            raise InvalidRequest("The query parameter 'url' is required.")
    else:
        url = field(json_body(), "url", str, required=True)
    from .. import extract  # loaded with the first preview: cheap cold starts

    return jsonify(extract.get_info(url))


@bp.get("/api/v1/openapi.json")
def openapi() -> Response:
    """Describe the API in OpenAPI 3.1."""
    from ..openapi import spec

    return jsonify(spec())
