"""Jobs: the table that is the truth about every download, its state machine and its JSON."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import sqlalchemy as sa
from flask import Flask
from sqlalchemy.orm import Mapped, mapped_column

from . import db
from .errors import Conflict, NotFound, RateLimited
from .formats import Choice

QUEUED, RUNNING, FINISHED, FAILED, CANCELLED = (
    "queued",
    "running",
    "finished",
    "failed",
    "cancelled",
)
ACTIVE = (QUEUED, RUNNING)
FINAL = (FINISHED, FAILED, CANCELLED)
LIST_LIMIT = 200
# First key of the two-key advisory locks taken per device (PostgreSQL); any fixed number.
_CAP_LOCK_SPACE = 0x6E7A


class Job(db.Base):
    """One download: what was asked, where it stands, and what came out."""

    __tablename__ = "jobs"

    id: Mapped[str] = mapped_column(sa.String(32), primary_key=True)
    device: Mapped[str] = mapped_column(sa.String(64))
    url: Mapped[str] = mapped_column(sa.Text)
    format: Mapped[str] = mapped_column(sa.String(64))
    audio_format: Mapped[str | None] = mapped_column(sa.String(8))
    clip_start: Mapped[float | None] = mapped_column(sa.Float)
    clip_end: Mapped[float | None] = mapped_column(sa.Float)
    status: Mapped[str] = mapped_column(sa.String(16))
    title: Mapped[str | None] = mapped_column(sa.Text)
    percent: Mapped[float | None] = mapped_column(sa.Float)
    downloaded_bytes: Mapped[int | None] = mapped_column(sa.BigInteger)
    total_bytes: Mapped[int | None] = mapped_column(sa.BigInteger)
    speed: Mapped[float | None] = mapped_column(sa.Float)
    eta: Mapped[float | None] = mapped_column(sa.Float)
    error_code: Mapped[str | None] = mapped_column(sa.String(32))
    error_message: Mapped[str | None] = mapped_column(sa.Text)
    file_key: Mapped[str | None] = mapped_column(sa.Text)
    file_name: Mapped[str | None] = mapped_column(sa.Text)
    file_size: Mapped[int | None] = mapped_column(sa.BigInteger)
    content_type: Mapped[str | None] = mapped_column(sa.String(100))
    # Runs since the last user action; bounded by MAX_ATTEMPTS when workers die.
    attempts: Mapped[int] = mapped_column(sa.Integer, default=0)
    # A token minted by each claim: a worker may only write to the job while it holds it.
    lease: Mapped[str | None] = mapped_column(sa.String(32))
    worker: Mapped[str | None] = mapped_column(sa.String(200))
    heartbeat_at: Mapped[dt.datetime | None] = mapped_column(db.UTCDateTime)
    created_at: Mapped[dt.datetime] = mapped_column(db.UTCDateTime)
    updated_at: Mapped[dt.datetime] = mapped_column(db.UTCDateTime)
    started_at: Mapped[dt.datetime | None] = mapped_column(db.UTCDateTime)
    finished_at: Mapped[dt.datetime | None] = mapped_column(db.UTCDateTime)

    def choice(self) -> Choice:
        """Rebuild the validated format choice this job was created with."""
        from .formats import choose

        return choose(self.format, self.audio_format)


def _iso(value: dt.datetime | None) -> str | None:
    if value is None:
        return None
    return (
        value.astimezone(dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    )


def to_json(job: Job) -> dict[str, Any]:
    """Serialize a job to the Job JSON of the API."""
    finished = job.status == FINISHED
    file = None
    if finished and job.file_key:
        file = {
            "name": job.file_name,
            "size": job.file_size,
            "content_type": job.content_type,
            "url": f"/api/v1/jobs/{job.id}/file",
        }
    error = None
    if job.error_code:
        error = {"code": job.error_code, "message": job.error_message or ""}
    return {
        "id": job.id,
        "url": job.url,
        "status": job.status,
        "title": job.title,
        "format": job.format,
        "progress": {
            "percent": 100.0 if finished else job.percent,
            "downloaded_bytes": job.downloaded_bytes,
            "total_bytes": job.total_bytes,
            "speed": job.speed,
            "eta": job.eta,
        },
        "error": error,
        "file": file,
        "created_at": _iso(job.created_at),
        "updated_at": _iso(job.updated_at),
        "finished_at": _iso(job.finished_at),
    }


_RESET_PROGRESS = {
    "percent": None,
    "downloaded_bytes": None,
    "total_bytes": None,
    "speed": None,
    "eta": None,
}


# --------------------------------------------------------------------------- the API side


def create(
    app: Flask, *, device: str, url: str, choice: Choice, start: float | None, end: float | None
) -> Job:
    """Insert a queued job for a device, refusing when the device has too many waiting."""
    cap = int(app.config["NAZZIL_MAX_QUEUED_PER_DEVICE"] or 0)
    now = db.utcnow()
    with db.session(app) as s:
        if cap and s.get_bind().dialect.name == "postgresql":
            # READ COMMITTED lets two requests both count cap-1 and both insert: take a
            # per-device lock until commit (SQLite's BEGIN IMMEDIATE serializes already).
            s.execute(
                sa.select(sa.func.pg_advisory_xact_lock(_CAP_LOCK_SPACE, sa.func.hashtext(device)))
            )
        if cap:
            waiting = (
                s.scalar(
                    sa.select(sa.func.count())
                    .select_from(Job)
                    .where(Job.device == device, Job.status.in_(ACTIVE))
                )
                or 0
            )
            if waiting >= cap:
                raise RateLimited(
                    f"This device already has {waiting} downloads waiting or running; "
                    "wait for some to finish.",
                    headers={"Retry-After": "30"},
                )
        job = Job(
            id=uuid.uuid4().hex,
            device=device,
            url=url,
            format=choice.format,
            audio_format=choice.audio_format,
            clip_start=start,
            clip_end=end,
            status=QUEUED,
            attempts=0,
            created_at=now,
            updated_at=now,
        )
        s.add(job)
    return job


def get(app: Flask, job_id: str, device: str) -> Job:
    """Return a device's job, or raise not_found (also for another device's job)."""
    with db.session(app, write=False) as s:
        job = s.get(Job, job_id) if len(job_id) <= 32 else None
    if job is None or job.device != device:
        raise NotFound("No such job.")
    return job


def list_for(app: Flask, device: str, limit: int = LIST_LIMIT) -> list[Job]:
    """Return a device's jobs, newest first."""
    with db.session(app, write=False) as s:
        rows = s.scalars(
            sa.select(Job)
            .where(Job.device == device)
            .order_by(Job.created_at.desc(), Job.id.desc())
            .limit(limit)
        )
        return list(rows)


def _transition(
    app: Flask, job_id: str, device: str, allowed: tuple[str, ...], values: dict[str, Any]
) -> bool:
    # One conditional UPDATE: a worker finishing at the same moment cannot be overwritten.
    with db.session(app) as s:
        result = s.execute(
            sa.update(Job)
            .where(Job.id == job_id, Job.device == device, Job.status.in_(allowed))
            .values(**values)
        )
        return result.rowcount == 1


def cancel(app: Flask, job_id: str, device: str) -> Job:
    """Cancel a queued or running job (a running one stops within seconds)."""
    now = db.utcnow()
    done = _transition(
        app,
        job_id,
        device,
        ACTIVE,
        {
            "status": CANCELLED,
            "lease": None,
            "finished_at": now,
            "updated_at": now,
            "speed": None,
            "eta": None,
        },
    )
    job = get(app, job_id, device)
    if not done and job.status != CANCELLED:
        raise Conflict(f"The job is {job.status}; only queued or running jobs can be cancelled.")
    return job


def retry(app: Flask, job_id: str, device: str) -> Job:
    """Queue a failed or cancelled job again."""
    now = db.utcnow()
    done = _transition(
        app,
        job_id,
        device,
        (FAILED, CANCELLED),
        {
            "status": QUEUED,
            "lease": None,
            "worker": None,
            "attempts": 0,
            "error_code": None,
            "error_message": None,
            "finished_at": None,
            "started_at": None,
            "updated_at": now,
            **_RESET_PROGRESS,
        },
    )
    job = get(app, job_id, device)
    if not done:
        raise Conflict(f"The job is {job.status}; only failed or cancelled jobs can be retried.")
    return job


def delete(app: Flask, job_id: str, device: str) -> str | None:
    """Delete a device's job row; return the storage key of its file, if it had one."""
    with db.session(app) as s:
        key = s.execute(
            sa.delete(Job).where(Job.id == job_id, Job.device == device).returning(Job.file_key)
        ).first()
    if key is None:
        raise NotFound("No such job.")
    return key[0]


# ------------------------------------------------------------------------ the worker side


def new_lease() -> str:
    """Mint a lease token for one run of a job."""
    return uuid.uuid4().hex


def claim(app: Flask, job_id: str, lease: str, worker: str) -> Job | None:
    """Move a queued job to running under a new lease; None if it is not queued any more."""
    now = db.utcnow()
    with db.session(app) as s:
        result = s.execute(
            sa.update(Job)
            .where(Job.id == job_id, Job.status == QUEUED)
            .values(
                status=RUNNING,
                lease=lease,
                worker=worker[:200],
                attempts=Job.attempts + 1,
                heartbeat_at=now,
                started_at=now,
                updated_at=now,
                error_code=None,
                error_message=None,
                **_RESET_PROGRESS,
            )
        )
        if result.rowcount != 1:
            return None
        return s.get(Job, job_id)


def _leased(app: Flask, job_id: str, lease: str, values: dict[str, Any]) -> bool:
    values.setdefault("updated_at", db.utcnow())
    with db.session(app) as s:
        result = s.execute(
            sa.update(Job)
            .where(Job.id == job_id, Job.lease == lease, Job.status == RUNNING)
            .values(**values)
        )
        return result.rowcount == 1


def update(app: Flask, job_id: str, lease: str, **values: Any) -> bool:
    """Write progress or title of a running job; False when the lease is lost (cancelled)."""
    return _leased(app, job_id, lease, values)


def finish(
    app: Flask,
    job_id: str,
    lease: str,
    *,
    file_key: str,
    file_name: str,
    file_size: int,
    content_type: str,
) -> bool:
    """Mark a running job finished with its file; False when the lease was lost meanwhile."""
    now = db.utcnow()
    return _leased(
        app,
        job_id,
        lease,
        {
            "status": FINISHED,
            "file_key": file_key,
            "file_name": file_name,
            "file_size": file_size,
            "content_type": content_type,
            "finished_at": now,
            "percent": 100.0,
            "speed": None,
            "eta": None,
            "lease": None,
        },
    )


def _failed(code: str, message: str, now: dt.datetime) -> dict[str, Any]:
    """The values of a running job that ends failed."""
    return {
        "status": FAILED,
        "error_code": code,
        "error_message": message,
        "finished_at": now,
        "updated_at": now,
        "speed": None,
        "eta": None,
        "lease": None,
    }


def fail(app: Flask, job_id: str, lease: str, code: str, message: str) -> bool:
    """Mark a running job failed with a coded error."""
    return _leased(app, job_id, lease, _failed(code, message, db.utcnow()))


def release(app: Flask, job_id: str, lease: str) -> bool:
    """Give a running job back to the queue (its worker is shutting down)."""
    return _leased(
        app,
        job_id,
        lease,
        {
            "status": QUEUED,
            "lease": None,
            "worker": None,
            "speed": None,
            "eta": None,
            "attempts": Job.attempts - 1,
        },
    )


def heartbeat(app: Flask, leases: dict[str, str]) -> set[str]:
    """Stamp running jobs held under these leases; return the ids still held."""
    if not leases:
        return set()
    now = db.utcnow()
    with db.session(app) as s:
        s.execute(
            sa.update(Job)
            .where(Job.lease.in_(list(leases.values())), Job.status == RUNNING)
            .values(heartbeat_at=now)
        )
        rows = s.execute(
            sa.select(Job.id, Job.lease).where(Job.id.in_(list(leases)), Job.status == RUNNING)
        ).all()
    return {job_id for job_id, lease in rows if leases.get(job_id) == lease}


def reap(app: Flask, stale_after: float, max_attempts: int) -> list[str]:
    """Re-queue running jobs whose worker stopped heartbeating; fail those out of attempts."""
    now = db.utcnow()
    cutoff = now - dt.timedelta(seconds=stale_after)
    requeued: list[str] = []
    with db.session(app) as s:
        stale = s.execute(
            sa.select(Job.id, Job.lease, Job.attempts).where(
                Job.status == RUNNING, Job.heartbeat_at < cutoff
            )
        ).all()
        for job_id, lease, attempts in stale:
            where = sa.update(Job).where(
                Job.id == job_id, Job.lease == lease, Job.status == RUNNING
            )
            if max_attempts and attempts >= max_attempts:
                message = f"The download was interrupted {attempts} times; giving up."
                s.execute(where.values(**_failed("internal_error", message, now)))
            elif (
                s.execute(
                    where.values(
                        status=QUEUED,
                        lease=None,
                        worker=None,
                        updated_at=now,
                        speed=None,
                        eta=None,
                    )
                ).rowcount
                == 1
            ):
                requeued.append(job_id)
    return requeued


def queued_before(app: Flask, seconds: float) -> list[str]:
    """Return ids of jobs queued and untouched for longer than seconds."""
    cutoff = db.utcnow() - dt.timedelta(seconds=seconds)
    with db.session(app, write=False) as s:
        return list(
            s.scalars(
                sa.select(Job.id).where(Job.status == QUEUED, Job.updated_at < cutoff).limit(1000)
            )
        )


def touch(app: Flask, job_ids: list[str]) -> None:
    """Mark queued jobs as just handled (so they are not re-sent again at once)."""
    if not job_ids:
        return
    with db.session(app) as s:
        s.execute(
            sa.update(Job)
            .where(Job.id.in_(job_ids), Job.status == QUEUED)
            .values(updated_at=db.utcnow())
        )


def expire_files(app: Flask, retention: float) -> list[str]:
    """Detach files of jobs finished longer ago than retention; return their storage keys."""
    cutoff = db.utcnow() - dt.timedelta(seconds=retention)
    keys: list[str] = []
    with db.session(app) as s:
        rows = s.execute(
            sa.select(Job.id, Job.file_key)
            .where(Job.status == FINISHED, Job.finished_at < cutoff, Job.file_key.is_not(None))
            .limit(1000)
        ).all()
        for job_id, key in rows:
            result = s.execute(
                sa.update(Job).where(Job.id == job_id, Job.file_key == key).values(file_key=None)
            )
            if result.rowcount == 1:
                keys.append(key)
    return keys


def purge(app: Flask, older_than: float) -> int:
    """Delete rows of final jobs older than the history limit."""
    cutoff = db.utcnow() - dt.timedelta(seconds=older_than)
    with db.session(app) as s:
        result = s.execute(
            sa.delete(Job).where(
                Job.status.in_(FINAL), Job.updated_at < cutoff, Job.file_key.is_(None)
            )
        )
        return int(result.rowcount or 0)


def file_keys(app: Flask) -> set[str]:
    """Return every storage key still referenced by a job."""
    with db.session(app, write=False) as s:
        return set(s.scalars(sa.select(Job.file_key).where(Job.file_key.is_not(None))))


def running_leases(app: Flask) -> set[str]:
    """Return the leases of all running jobs."""
    with db.session(app, write=False) as s:
        return set(s.scalars(sa.select(Job.lease).where(Job.status == RUNNING)))
