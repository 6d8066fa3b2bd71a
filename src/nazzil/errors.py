"""Domain errors that carry a stable code and an HTTP status, and the one JSON error shape."""

from __future__ import annotations

from typing import Any


class NazzilError(Exception):
    """An error with a stable code, an HTTP status and a message for a person."""

    code = "internal_error"
    status = 500
    message = "Something went wrong on our side."

    def __init__(self, message: str | None = None, *, headers: dict[str, str] | None = None):
        super().__init__(message or self.message)
        self.message = message or self.message
        self.headers = headers or {}


class InvalidRequest(NazzilError):
    code, status, message = "invalid_request", 400, "The request is not valid."


class InvalidURL(NazzilError):
    code, status, message = "invalid_url", 400, "That is not an absolute http(s) link."


class BlockedAddress(NazzilError):
    code, status, message = (
        "blocked_address",
        403,
        "That link points to a private or reserved network address, which is not allowed.",
    )


class Unauthorized(NazzilError):
    code, status, message = "unauthorized", 401, "An access token is required."


class Forbidden(NazzilError):
    code, status, message = "forbidden", 403, "That is not allowed."


class NotFound(NazzilError):
    code, status, message = "not_found", 404, "Nothing here."


class MethodNotAllowed(NazzilError):
    code, status, message = "method_not_allowed", 405, "That method is not allowed here."


class Conflict(NazzilError):
    code, status, message = "conflict", 409, "That cannot be done in the current state."


class PayloadTooLarge(NazzilError):
    code, status, message = "payload_too_large", 413, "The request body is too large."


class UnsupportedURL(NazzilError):
    code, status, message = "unsupported_url", 422, "No video was found at that link."


class FormatUnavailable(NazzilError):
    code, status, message = "format_unavailable", 422, "That format or quality is not offered."


class TooLarge(NazzilError):
    code, status, message = "too_large", 422, "The media is larger than this server allows."


class TooLong(NazzilError):
    code, status, message = "too_long", 422, "The media is longer than this server allows."


class RangeNotSatisfiable(NazzilError):
    code, status, message = (
        "range_not_satisfiable",
        416,
        "The requested byte range is outside the file.",
    )


class RateLimited(NazzilError):
    code, status, message = "rate_limited", 429, "Too many requests; please wait a moment."


class InternalError(NazzilError):
    pass


class UpstreamError(NazzilError):
    code, status, message = "upstream_error", 502, "The site answered with an error."


class JobsDisabled(NazzilError):
    code, status, message = "jobs_disabled", 503, "This deployment runs no download jobs."


class InsufficientStorage(NazzilError):
    code, status, message = (
        "insufficient_storage",
        507,
        "The server is low on disk space; no new downloads for now.",
    )


class Unavailable(NazzilError):
    code, status, message = "unavailable", 503, "The service is not ready."


class UpstreamTimeout(NazzilError):
    code, status, message = "upstream_timeout", 504, "The site did not answer in time."


# Werkzeug's HTTP errors answer with the code of the same status.
# Every code an error answer can carry, in the order the classes are defined.
CODES: tuple[str, ...] = tuple(
    dict.fromkeys(
        value.code
        for value in list(globals().values())
        if isinstance(value, type) and issubclass(value, NazzilError)
    )
)

CODE_BY_STATUS: dict[int, str] = {
    400: "invalid_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    416: "range_not_satisfiable",
    429: "rate_limited",
    500: "internal_error",
    502: "upstream_error",
    503: "unavailable",
    504: "upstream_timeout",
    507: "insufficient_storage",
}


def error_body(code: str, message: str, request_id: str | None) -> dict[str, Any]:
    """Build the one JSON error shape."""
    return {"error": {"code": code, "message": message}, "request_id": request_id}
