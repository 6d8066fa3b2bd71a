"""Logging, configured once at start: one line per event on stderr, with the request id."""

from __future__ import annotations

import logging
import sys

_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"


# Line breaks and other controls in a message (a request path, a site's title) would let a
# stranger forge whole log lines; they are written escaped. Tracebacks stay multi-line.
_ESCAPES = {c: f"\\x{c:02x}" for c in (*range(0x20), 0x7F) if c != 0x09}
_ESCAPES.update({0x0A: "\\n", 0x0D: "\\r", 0x85: "\\x85", 0x2028: "\\u2028", 0x2029: "\\u2029"})


class _Formatter(logging.Formatter):
    """The log format, with control characters in the message escaped."""

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 - logging's name
        record.message = record.message.translate(_ESCAPES)
        return super().formatMessage(record)


class _RequestIdFilter(logging.Filter):
    """Stamp every record with the current request or job id, or '-'."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = current_request_id() or "-"
        return True


def current_request_id() -> str | None:
    """Return the id of the request being served, if any."""
    try:
        from flask import g, has_app_context

        if has_app_context():
            return g.get("request_id")
    except Exception:  # noqa: BLE001 - logging must never fail
        return None
    return None


def configure(level: str = "INFO") -> None:
    """Send nazzil's logs to stderr once; later calls only adjust the level."""
    root = logging.getLogger("nazzil")
    root.setLevel(getattr(logging, str(level).upper(), logging.INFO))
    if any(getattr(h, "_nazzil", False) for h in root.handlers):
        return
    handler = logging.StreamHandler(sys.stderr)
    handler._nazzil = True  # type: ignore[attr-defined]
    handler.setFormatter(_Formatter(_FORMAT))
    handler.addFilter(_RequestIdFilter())
    root.addHandler(handler)
    root.propagate = False
