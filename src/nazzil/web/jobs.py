"""The jobs API: create, list, read, cancel, retry, delete download jobs, and fetch their files.

The database, queue and storage modules are imported inside the views: creating the app must
stay cheap (serverless cold starts), and they are only needed once a job is touched.
"""

from __future__ import annotations

import logging
import math
import shutil
from typing import Any

from flask import Blueprint, Flask, Response, current_app, jsonify

from ..device import get_device_id
from ..errors import Conflict, InsufficientStorage, InvalidRequest, JobsDisabled, NotFound
from .api import field, json_body

log = logging.getLogger(__name__)

bp = Blueprint("jobs", __name__, url_prefix="/api/v1/jobs")


def disabled_reason(app: Flask) -> str | None:
    """Say why this deployment runs no jobs, or None when it does."""
    if app.config["NAZZIL_MODE"] == "serverless":
        if not app.config.get("NAZZIL_REDIS_URL"):
            return "This deployment runs no download jobs."
        if not app.config.get("NAZZIL_DATABASE_URL"):
            return "Jobs on a serverless deployment need NAZZIL_DATABASE_URL as well."
    return None


def require_jobs() -> None:
    """Answer jobs_disabled where no jobs run; otherwise make sure the schema is current."""
    reason = disabled_reason(current_app)
    if reason:
        raise JobsDisabled(reason)
    from .. import db

    db.ensure_schema(current_app)


bp.before_request(require_jobs)


# About 115 days: longer than any real media, small enough for ffmpeg's time arguments.
MAX_SECONDS = 10_000_000


def _number(body: dict[str, Any], name: str) -> float | None:
    value = body.get(name)
    if value is None:
        return None
    # bool is an int in Python; a JSON integer may also be too big for a float (10**400).
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidRequest(f"The field '{name}' must be a number of seconds.")
    if isinstance(value, int) and abs(value) > MAX_SECONDS:
        value = math.inf if value > 0 else -math.inf
    if not math.isfinite(value) or not 0 <= value <= MAX_SECONDS:
        raise InvalidRequest(
            f"The field '{name}' must be a number of seconds from 0 to {MAX_SECONDS}."
        )
    return float(value)


def _check_disk(app: Flask) -> None:
    from ..storage import work_root

    minimum = int(app.config["NAZZIL_MIN_FREE_DISK"] or 0)
    if not minimum:
        return
    root = work_root(app).parent
    free = shutil.disk_usage(root).free
    if free < minimum:
        log.warning("refusing a job: %d MB free in %s", free // 2**20, root)
        raise InsufficientStorage()


def _job(job: Any, status: int = 200) -> tuple[Response, int]:
    from ..jobs import to_json

    return jsonify(to_json(job)), status


@bp.post("")
def create() -> tuple[Response, int, dict[str, str]]:
    """Queue a download of a URL in a format, optionally cut to a section."""
    from .. import jobs, netguard
    from ..formats import choose

    app = current_app._get_current_object()  # type: ignore[attr-defined]
    body = json_body()
    url = field(body, "url", str, required=True)
    choice = choose(field(body, "format", str, default="best"), field(body, "audio_format", str))
    start, end = _number(body, "start"), _number(body, "end")
    if end is not None and end <= (start or 0):
        raise InvalidRequest("The field 'end' must be greater than 'start'.")
    if start == 0:
        start = None
    url = netguard.precheck(url, netguard.policy_for(app), int(app.config["NAZZIL_MAX_URL_LENGTH"]))
    _check_disk(app)
    job = jobs.create(app, device=get_device_id(), url=url, choice=choice, start=start, end=end)
    _send(app, job.id)
    response, status = _job(job, 202)
    return response, status, {"Location": f"/api/v1/jobs/{job.id}"}


@bp.get("")
def index() -> Response:
    """List this device's jobs, newest first."""
    from .. import jobs

    found = jobs.list_for(current_app, get_device_id())
    return jsonify(jobs=[jobs.to_json(job) for job in found])


@bp.get("/<job_id>")
def show(job_id: str) -> tuple[Response, int]:
    """Show one job."""
    from .. import jobs

    return _job(jobs.get(current_app, job_id, get_device_id()))


@bp.post("/<job_id>/cancel")
def cancel(job_id: str) -> tuple[Response, int]:
    """Cancel a queued or running job."""
    from .. import jobs

    return _job(jobs.cancel(current_app, job_id, get_device_id()))


def _send(app: Flask, job_id: str) -> None:
    """Put a job on the queue; if the queue is down, housekeeping sends it later."""
    from .. import queue

    try:
        queue.enqueue(app, job_id)
    except Exception:  # noqa: BLE001 - the row is the truth; housekeeping sends it again
        log.warning(
            "job %s: could not reach the queue; it will be sent later", job_id, exc_info=True
        )


@bp.post("/<job_id>/retry")
def retry(job_id: str) -> tuple[Response, int]:
    """Queue a failed or cancelled job again."""
    from .. import jobs

    app = current_app._get_current_object()  # type: ignore[attr-defined]
    _check_disk(app)
    job = jobs.retry(app, job_id, get_device_id())
    _send(app, job.id)
    return _job(job, 202)


@bp.delete("/<job_id>")
def delete(job_id: str) -> tuple[str, int]:
    """Delete a job and its file."""
    from .. import jobs
    from ..storage import get_storage

    key = jobs.delete(current_app, job_id, get_device_id())
    if key:
        try:
            get_storage(current_app).delete(key)
        except Exception:  # noqa: BLE001 - the orphan sweep removes it later
            log.warning("job %s: could not remove %s", job_id, key, exc_info=True)
    return "", 204


@bp.get("/<job_id>/file")
def file(job_id: str) -> Response:
    """Send the job's file, with Range support and its name in Content-Disposition."""
    from .. import jobs
    from ..storage import get_storage

    job = jobs.get(current_app, job_id, get_device_id())
    if job.status != jobs.FINISHED:
        raise Conflict(f"The job is {job.status}; its file is not ready.")
    if not job.file_key:
        raise NotFound("The file is gone; it expired.")
    return get_storage(current_app).send(
        job.file_key, job.file_name or "video", job.content_type or "application/octet-stream"
    )


def _ready_database(app: Flask) -> None:
    from .. import db

    db.check(app)


def _ready_queue(app: Flask) -> None:
    from .. import queue

    queue.check(app)


def _ready_storage(app: Flask) -> None:
    from ..storage import get_storage

    get_storage(app).check()


def _start_workers(app: Flask) -> None:
    from .. import queue

    queue.start_embedded(app)


def init_app(app: Flask) -> None:
    """Register the jobs API, the event stream, readiness checks and the embedded workers."""
    from . import events

    app.register_blueprint(bp)
    app.register_blueprint(events.bp)
    if disabled_reason(app):
        return
    ext = app.extensions["nazzil"]
    checks = ext.setdefault("ready_checks", {})
    checks.update(database=_ready_database, queue=_ready_queue, storage=_ready_storage)
    ext.setdefault("on_serve", []).append(_start_workers)
