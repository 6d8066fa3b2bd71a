"""Logging, configured once at start: one line per event on stderr, with the request id."""

from __future__ import annotations

import logging
import sys

_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"


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
    handler.setFormatter(logging.Formatter(_FORMAT))
    handler.addFilter(_RequestIdFilter())
    root.addHandler(handler)
    root.propagate = False
