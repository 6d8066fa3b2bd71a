"""Server-sent events: a job's JSON each time it changes, ending at its final state.

The stream polls the database, so it follows a job run by any worker in any process.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator

from flask import Blueprint, Flask, Response, current_app, request

from ..device import get_device_id
from ..errors import NotFound
from ..server import client_gone
from ..state import once
from .jobs import require_jobs

bp = Blueprint("job_events", __name__, url_prefix="/api/v1/jobs")
bp.before_request(require_jobs)

POLL_SECONDS = 0.5
KEEPALIVE_SECONDS = 15.0
# Browsers reconnect an EventSource on their own; a bounded stream frees the server thread.
LIFETIME_SECONDS = 300.0
# Each open stream holds a server thread: at most this share of THREADS follows jobs live, so
# a few clients cannot take every thread. Beyond it a stream sends the job once and ends; the
# EventSource reconnects after `retry` (the page falls back to polling), like a slow poll.
STREAM_SHARE = 4


def _slots(app: Flask) -> threading.BoundedSemaphore:
    threads = int(app.config.get("NAZZIL_THREADS") or 32)
    return once(
        app, "event_slots", lambda: threading.BoundedSemaphore(max(1, threads // STREAM_SHARE))
    )


def _event(data: dict) -> str:
    return f"data: {json.dumps(data, ensure_ascii=False, separators=(',', ':'))}\n\n"


def stream(
    app: Flask,
    job_id: str,
    device: str,
    first: dict,
    gone: Callable[[], bool] | None = None,
) -> Iterator[str]:
    """Yield the job as an event now and after each change; stop after a final state."""
    from .. import jobs

    yield "retry: 2000\n\n" + _event(first)
    if first["status"] in jobs.FINAL:
        return
    slots = _slots(app)
    if not slots.acquire(blocking=False):
        return
    try:
        yield from _follow(app, job_id, device, first, gone)
    finally:
        slots.release()


def _follow(
    app: Flask, job_id: str, device: str, last: dict, gone: Callable[[], bool] | None
) -> Iterator[str]:
    from .. import jobs

    started = last_sent = time.monotonic()
    while time.monotonic() - started < LIFETIME_SECONDS:
        time.sleep(POLL_SECONDS)
        if gone is not None and gone():
            return  # the client hung up: free the thread now, not at the next write
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
        stream(app, job_id, device, first, client_gone(request.environ)),
        mimetype="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
