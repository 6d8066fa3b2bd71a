"""Server-sent events: a job's JSON each time it changes, ending at its final state.

The stream polls the database, so it follows a job run by any worker in any process.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

from flask import Blueprint, Flask, Response, current_app

from ..device import get_device_id
from ..errors import NotFound
from .jobs import require_jobs

bp = Blueprint("job_events", __name__, url_prefix="/api/v1/jobs")
bp.before_request(require_jobs)

POLL_SECONDS = 0.5
KEEPALIVE_SECONDS = 15.0
# Browsers reconnect an EventSource on their own; a bounded stream frees the server thread.
LIFETIME_SECONDS = 300.0


def _event(data: dict) -> str:
    return f"data: {json.dumps(data, ensure_ascii=False, separators=(',', ':'))}\n\n"


def stream(app: Flask, job_id: str, device: str, first: dict) -> Iterator[str]:
    """Yield the job as an event now and after each change; stop after a final state."""
    from .. import jobs

    started = last_sent = time.monotonic()
    last = first
    yield "retry: 2000\n\n" + _event(first)
    if first["status"] in jobs.FINAL:
        return
    while time.monotonic() - started < LIFETIME_SECONDS:
        time.sleep(POLL_SECONDS)
        with app.app_context():
            try:
                data = jobs.to_json(jobs.get(app, job_id, device))
            except NotFound:
                return
        if data != last:
            yield _event(data)
            last, last_sent = data, time.monotonic()
            if data["status"] in jobs.FINAL:
                return
        elif time.monotonic() - last_sent > KEEPALIVE_SECONDS:
            yield ": keep-alive\n\n"
            last_sent = time.monotonic()


@bp.get("/<job_id>/events")
def events(job_id: str) -> Response:
    """Stream a job's changes as text/event-stream."""
    from .. import jobs

    app = current_app._get_current_object()  # type: ignore[attr-defined]
    device = get_device_id()
    first = jobs.to_json(jobs.get(app, job_id, device))
    return Response(
        stream(app, job_id, device, first),
        mimetype="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
