"""The application factory: settings, blueprints, request ids, logging and error handlers."""

from __future__ import annotations

import logging
import re
import secrets
import time
from collections.abc import Mapping
from typing import Any

from flask import Flask, Response, g, jsonify, render_template, request
from flask.globals import request_ctx
from werkzeug.exceptions import HTTPException

from . import errors, logs, settings

log = logging.getLogger(__name__)
access_log = logging.getLogger("nazzil.access")

_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    """Create the nazzil WSGI app; does no I/O, everything heavy starts on first use."""
    app = Flask(__name__)
    app.config.from_mapping(settings.defaults())
    app.config.update(settings.from_environ())
    if config:
        app.config.update(settings.normalize(config))
    app.config["MAX_CONTENT_LENGTH"] = app.config["NAZZIL_MAX_BODY"] or None
    # Flask refuses other Host headers with 400 when this list is set.
    app.config["TRUSTED_HOSTS"] = list(app.config["NAZZIL_HOSTNAMES"]) or None
    app.config["NAZZIL_MODE"] = settings.mode(app.config)
    app.json.ensure_ascii = False  # type: ignore[attr-defined]
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.extensions["nazzil"] = {}
    logs.configure(app.config["NAZZIL_LOG_LEVEL"])

    from . import device, i18n, security
    from .web import api, pages
    from .web import jobs as web_jobs
    from .web import stream as web_stream

    device.init_app(app)
    i18n.init_app(app)
    app.before_request(_start_request)
    security.init_app(app)  # after the request id, before any view: tokens, limits, headers
    app.after_request(_finish_request)
    app.register_error_handler(Exception, handle_error)
    app.register_blueprint(pages.bp)
    app.register_blueprint(api.bp)
    app.register_blueprint(web_stream.bp)
    web_jobs.init_app(app)
    return app


def _start_request() -> None:
    incoming = request.headers.get("X-Request-ID", "")
    g.request_id = incoming if _REQUEST_ID.fullmatch(incoming) else secrets.token_hex(8)
    g.started = time.perf_counter()


def _finish_request(response: Response) -> Response:
    request_id = g.get("request_id") or secrets.token_hex(8)
    response.headers["X-Request-ID"] = request_id
    elapsed = (time.perf_counter() - g.get("started", time.perf_counter())) * 1000
    access_log.info("%s %s %s %.1fms", request.method, request.path, response.status_code, elapsed)
    return response


def wants_json() -> bool:
    """Tell whether the client should get errors as JSON rather than an HTML page."""
    path = request.path
    if path.startswith("/api/") or path in ("/healthz", "/readyz"):
        return True
    best = request.accept_mimetypes.best_match(["text/html", "application/json"])
    return best == "application/json"


def handle_error(exc: Exception) -> tuple[Response, int] | Response:
    """Turn any exception into the JSON error shape or a small HTML page."""
    request_id = g.get("request_id")
    headers: dict[str, str] = {}
    if isinstance(exc, errors.NazzilError):
        code, status, message = exc.code, exc.status, exc.message
        headers.update(exc.headers)
        if status >= 500:
            log.warning("%s: %s", code, message)
    elif isinstance(exc, HTTPException):
        status = exc.code or 500
        code = errors.CODE_BY_STATUS.get(status, "http_error")
        message = _http_message(exc)
        if exc.response is not None:
            for name in ("Retry-After", "Allow"):
                if name in exc.response.headers:
                    headers[name] = exc.response.headers[name]
        elif status == 405 and getattr(exc, "valid_methods", None):
            headers["Allow"] = ", ".join(exc.valid_methods)  # type: ignore[attr-defined]
    else:
        log.error("unhandled error", exc_info=exc)
        code, status = "internal_error", 500
        message = errors.InternalError.message + f" (request id {request_id})"
    if wants_json():
        response = jsonify(errors.error_body(code, message, request_id))
    elif request_ctx.url_adapter is None:
        # A refused Host header leaves no URL adapter, so the page template cannot link.
        response = Response(f"{status}: {message}\n", mimetype="text/plain")
    else:
        response = Response(
            render_template(
                "error.html", code=code, status=status, message=message, request_id=request_id
            ),
            mimetype="text/html",
        )
    response.status_code = status
    response.headers.update(headers)
    return response


# Werkzeug's own errors (a bad route, method or body) answer with the matching domain message.
_HTTP_MESSAGES = {
    cls.status: cls.message
    for cls in (
        errors.InvalidRequest,
        errors.NotFound,
        errors.MethodNotAllowed,
        errors.PayloadTooLarge,
        errors.RateLimited,
    )
}


def _http_message(exc: HTTPException) -> str:
    return _HTTP_MESSAGES.get(exc.code or 500) or exc.name or "Error"
