"""The job queue (Huey on SQLite in the data dir, or on Redis) and the workers that run jobs.

The jobs table is the truth; the queue only delivers job ids. A worker claims a job with a
conditional UPDATE (queued -> running under a fresh lease), so a duplicate delivery is a
no-op. Running jobs heartbeat; housekeeping re-queues jobs whose worker went silent.
"""

from __future__ import annotations

import atexit
import logging
import os
import signal
import socket
import threading
import time
from pathlib import Path
from typing import Any

from flask import Flask, g

from . import db, download, jobs, netguard, storage
from .datadir import data_dir
from .errors import JobsDisabled, NazzilError
from .state import once

log = logging.getLogger(__name__)

TASK_NAME = "download_job"


def get_huey(app: Flask) -> Any:
    """Return the app's Huey instance (Redis when REDIS_URL is set, else SQLite), made lazily."""
    return once(app, "huey", lambda: _make_huey(app))


def _make_huey(app: Flask) -> Any:
    name = str(app.config.get("NAZZIL_QUEUE_NAME") or "nazzil")
    url = str(app.config.get("NAZZIL_REDIS_URL") or "")
    if url:
        from huey import RedisHuey

        huey = RedisHuey(name, url=url, results=False, blocking=True, read_timeout=1)
    else:
        from huey import SqliteHuey

        root = data_dir(app)
        if root is None:
            raise JobsDisabled("Jobs need a writable data directory or NAZZIL_REDIS_URL.")
        huey = SqliteHuey(name, filename=str(root / "queue.db"), results=False, timeout=30)

    def download_job(job_id: str) -> None:
        run_job(app, job_id)

    app.extensions["nazzil"]["huey_task"] = huey.task(name=TASK_NAME)(download_job)
    return huey


def enqueue(app: Flask, job_id: str) -> None:
    """Hand a job id to the queue; the task id is the job id."""
    huey = get_huey(app)
    task = app.extensions["nazzil"]["huey_task"]
    huey.enqueue(task.s(job_id, id=job_id))
    runner = app.extensions["nazzil"].get("runner")
    if runner is not None:
        runner.wake.set()


def pending_ids(app: Flask) -> set[str]:
    """Return the job ids waiting in the queue."""
    huey = get_huey(app)
    ids: set[str] = set()
    for raw in huey.storage.enqueued_items(10_000):
        try:
            ids.add(huey.deserialize_task(raw).id)
        except Exception:  # noqa: BLE001, S112 - a foreign or broken message is not ours
            continue
    return ids


def check(app: Flask) -> None:
    """Raise when the queue does not answer (readiness check)."""
    get_huey(app).storage.queue_size()


def worker_name() -> str:
    """Name this worker thread in the jobs table (host, process, thread)."""
    return f"{socket.gethostname()}:{os.getpid()}:{threading.current_thread().name}"


class CancelFlag(threading.Event):
    """An event that also says why it was set."""

    reason = "cancelled"


class Tracker:
    """A running job as its worker sees it: lease, cancel flag, progress writes."""

    def __init__(self, app: Flask, job_id: str, lease: str):
        self.app, self.job_id, self.lease = app, job_id, lease
        self.cancel = CancelFlag()

    def stop(self, reason: str) -> None:
        """Ask the download to stop (cancelled, deleted, lost lease, or shutdown)."""
        if not self.cancel.is_set():
            self.cancel.reason = reason
            self.cancel.set()

    def report(self, progress: dict[str, Any]) -> None:
        """Write progress; a write that finds the lease gone means the job was cancelled."""
        if not jobs.update(self.app, self.job_id, self.lease, **progress):
            self.stop("cancelled")

    def title(self, title: str | None) -> None:
        """Write the title as soon as it is known."""
        if title and not jobs.update(self.app, self.job_id, self.lease, title=title[:1000]):
            self.stop("cancelled")


def _work_dir(app: Flask, job_id: str, lease: str) -> Path:
    """Where one run (one lease) of a job keeps its partial files."""
    return storage.work_root(app) / f"{job_id}.{lease}"


def _give_back(app: Flask, job_id: str, lease: str) -> bool:
    """Put a job this worker still holds back in the queue (the worker is stopping)."""
    if not jobs.release(app, job_id, lease):
        return False
    enqueue(app, job_id)
    log.info("job %s: given back to the queue (worker stopping)", job_id)
    return True


def run_job(app: Flask, job_id: str) -> None:
    """The task body: claim the job, download, store, and always leave a final state."""
    with app.app_context():
        g.request_id = f"job-{job_id[:12]}"  # every log line of this run names the job
        db.ensure_schema(app)
        lease = jobs.new_lease()
        job = jobs.claim(app, job_id, lease, worker_name())
        if job is None:
            log.info("job %s is not queued any more; skipped", job_id)
            return
        runner: Runner | None = app.extensions["nazzil"].get("runner")
        tracker = Tracker(app, job_id, lease)
        if runner is not None:
            runner.track(tracker)
        work = None
        started = time.monotonic()
        log.info("job %s: attempt %d, format %s", job_id, job.attempts, job.format)
        # Everything after the claim is inside the try: a claimed job must reach a final state.
        try:
            work = _work_dir(app, job_id, lease)
            # Partial files of an earlier run of this job whose worker died here are useless.
            for earlier in work.parent.glob(f"{job_id}.*"):
                download.clear_dir(earlier)
            result = download.fetch(
                job.url,
                job.choice(),
                work,
                config=app.config,
                policy=netguard.policy_for(app),
                start=job.clip_start,
                end=job.clip_end,
                cancel=tracker.cancel,
                report=tracker.report,
                on_title=tracker.title,
            )
            store = storage.get_storage(app)
            key = store.put(result.path, result.name, job_id)
            # Local names get a " (2)" when taken; the user sees the name that was stored.
            name = key.rpartition("/")[2]
            if jobs.finish(
                app,
                job_id,
                lease,
                file_key=key,
                file_name=name,
                file_size=result.size,
                content_type=result.content_type,
            ):
                log.info(
                    "job %s: finished %s (%d bytes) in %.1fs",
                    job_id,
                    key,
                    result.size,
                    time.monotonic() - started,
                )
            else:
                store.delete(key)
                log.info("job %s: cancelled or deleted while finishing", job_id)
        except download.Cancelled as exc:
            if not (exc.reason == "shutdown" and _give_back(app, job_id, lease)):
                log.info("job %s: stopped (%s)", job_id, exc.reason)
        except NazzilError as exc:
            log.info("job %s: failed: %s %s", job_id, exc.code, exc.message)
            jobs.fail(app, job_id, lease, exc.code, exc.message)
        except Exception:
            log.exception("job %s: failed with a bug", job_id)
            jobs.fail(app, job_id, lease, "internal_error", "Something went wrong on our side.")
        finally:
            if runner is not None:
                runner.untrack(tracker)
            if work is not None:
                download.clear_dir(work)


# ---------------------------------------------------------------------------- housekeeping


def requeue_stale(app: Flask) -> list[str]:
    """Re-queue jobs whose worker died and jobs the queue lost; return their ids."""
    config = app.config
    stale_after = float(config["NAZZIL_STALE_AFTER"])
    ids = jobs.reap(app, stale_after, int(config["NAZZIL_MAX_ATTEMPTS"]))
    for job_id in ids:
        log.warning("job %s: its worker went silent; queued again", job_id)
        enqueue(app, job_id)
    waiting = jobs.queued_before(app, stale_after)
    if waiting:
        pending = pending_ids(app)
        lost = [job_id for job_id in waiting if job_id not in pending]
        jobs.touch(app, lost)
        for job_id in lost:
            log.warning("job %s: not in the queue; sent again", job_id)
            enqueue(app, job_id)
        ids += lost
    return ids


def clean(app: Flask) -> None:
    """Remove expired files, old history, orphaned files and abandoned work dirs."""
    config = app.config
    store = storage.get_storage(app)
    retention = float(config["NAZZIL_RETENTION"] or 0)
    if retention > 0:
        for key in jobs.expire_files(app, retention):
            store.delete(key)
            log.info("removed expired file %s", key)
    history = float(config["NAZZIL_JOB_HISTORY"] or 0)
    if history > 0:
        jobs.purge(app, history)
    for key in list(store.orphans(jobs.file_keys(app), older_than=3600)):
        store.delete(key)
        log.info("removed orphaned file %s", key)
    work = storage.work_root(app)
    if work.is_dir():
        held = jobs.running_leases(app)
        cutoff = time.time() - 600
        for entry in work.iterdir():
            lease = entry.name.rpartition(".")[2]
            if lease not in held and entry.stat().st_mtime < cutoff:
                download.clear_dir(entry)


def clean_interval(config: Any) -> float:
    """Seconds between cleanups: 5 min, sooner when RETENTION is short (files go on time)."""
    retention = float(config["NAZZIL_RETENTION"] or 0)
    if retention <= 0:
        return 300.0
    return max(1.0, min(300.0, retention / 2))


class Runner:
    """Worker threads that take jobs from the queue, plus heartbeat and housekeeping threads."""

    def __init__(self, app: Flask, workers: int):
        self.app = app
        self.workers = max(0, int(workers))
        self.stopping = threading.Event()
        self.wake = threading.Event()
        self.threads: list[threading.Thread] = []
        self._trackers: dict[str, Tracker] = {}
        self._stopping_once = False
        self._stopped = threading.Event()
        self._lock = threading.Lock()

    def track(self, tracker: Tracker) -> None:
        """Heartbeat a running job from now on."""
        with self._lock:
            self._trackers[tracker.job_id] = tracker
            if self.stopping.is_set():
                tracker.stop("shutdown")

    def untrack(self, tracker: Tracker) -> None:
        """Stop heartbeating a job."""
        with self._lock:
            if self._trackers.get(tracker.job_id) is tracker:
                del self._trackers[tracker.job_id]

    def start(self) -> Runner:
        """Migrate the database, then start the threads; returns self."""
        db.ensure_schema(self.app)
        get_huey(self.app)
        self.app.extensions["nazzil"]["runner"] = self
        targets = [(self._work, f"nazzil-worker-{i + 1}") for i in range(self.workers)]
        targets += [(self._heartbeat, "nazzil-heartbeat"), (self._housekeep, "nazzil-housekeeping")]
        for target, name in targets:
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self.threads.append(thread)
        log.info("%d download workers started", self.workers)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop taking jobs, give running ones back to the queue, and wait for the threads."""
        with self._lock:
            first, self._stopping_once = not self._stopping_once, True
        if not first:  # a server's stop hook, then atexit: wait for the first to finish
            self._stopped.wait(timeout + 1.0)
            return
        self.stopping.set()
        self.wake.set()
        with self._lock:
            for tracker in self._trackers.values():
                tracker.stop("shutdown")
        deadline = time.monotonic() + timeout
        for thread in self.threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        with self._lock:
            late = list(self._trackers.values())
        for tracker in late:
            # Its thread is still in a read that does not look at the flag (a slow site while
            # the formats are read): give the job back from here. The lease changes, so that
            # thread can no longer write to the job, whatever it does next.
            with self.app.app_context():
                _give_back(self.app, tracker.job_id, tracker.lease)
                download.clear_dir(_work_dir(self.app, tracker.job_id, tracker.lease))
        if self.app.extensions["nazzil"].get("runner") is self:
            del self.app.extensions["nazzil"]["runner"]
        self._stopped.set()

    def _work(self) -> None:
        huey = get_huey(self.app)
        delay = 0.05
        while not self.stopping.is_set():
            try:
                task = huey.dequeue()
            except Exception:  # noqa: BLE001 - the queue may be down for a while; keep trying
                log.warning("cannot read the job queue", exc_info=True)
                self.stopping.wait(2)
                continue
            if task is None:
                if not huey.storage.blocking:
                    # Polling SQLite: back off to 0.5 s; an enqueue in this process wakes us.
                    if self.wake.wait(delay):
                        self.wake.clear()
                    delay = min(delay * 2, 0.5)
                continue
            delay = 0.05
            try:
                huey.execute(task)
            except Exception:  # noqa: BLE001 - run_job records failures; this is a last guard
                log.exception("task %s crashed", task.id)

    def _heartbeat(self) -> None:
        interval = float(self.app.config["NAZZIL_HEARTBEAT"])
        while not self.stopping.wait(interval):
            with self._lock:
                held = {job_id: t.lease for job_id, t in self._trackers.items()}
            if not held:
                continue
            try:
                alive = jobs.heartbeat(self.app, held)
            except Exception:  # noqa: BLE001 - a missed beat is retried; staleness takes minutes
                log.warning("heartbeat failed", exc_info=True)
                continue
            with self._lock:
                for job_id in set(held) - alive:
                    tracker = self._trackers.get(job_id)
                    if tracker is not None:
                        tracker.stop("cancelled")

    def _housekeep(self) -> None:
        config = self.app.config
        every = max(0.5, min(float(config["NAZZIL_STALE_AFTER"]) / 3, 30.0))
        next_clean = 0.0
        while True:
            with self.app.app_context():
                try:
                    requeue_stale(self.app)
                    if time.monotonic() >= next_clean:
                        clean(self.app)
                        next_clean = time.monotonic() + clean_interval(config)
                except Exception:  # noqa: BLE001 - housekeeping must outlive a bad moment
                    log.warning("housekeeping failed", exc_info=True)
            if self.stopping.wait(every):
                return


def start_embedded(app: Flask) -> Runner | None:
    """Start NAZZIL_WORKERS workers inside `nazzil serve` (after migrating the database)."""
    db.upgrade(app)
    workers = int(app.config["NAZZIL_WORKERS"])
    if workers <= 0:
        return None
    runner = Runner(app, workers).start()
    atexit.register(runner.stop, 5.0)
    # A server that stops gracefully runs these first (server.py): the jobs go back to the
    # queue before it waits for its open responses, not after.
    app.extensions["nazzil"].setdefault("on_stop", []).append(lambda: runner.stop(5.0))
    if (
        threading.current_thread() is threading.main_thread()
        and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    ):
        # Platforms stop processes with SIGTERM: end the server as Ctrl-C does, so the atexit
        # hook hands running jobs back to the queue instead of leaving them to go stale.
        signal.signal(signal.SIGTERM, _interrupt)
    return runner


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def run_worker(app: Flask, workers: int | None = None) -> None:
    """Run workers in the foreground until SIGINT or SIGTERM (`nazzil worker`)."""
    db.upgrade(app)
    count = int(workers if workers is not None else app.config["NAZZIL_WORKERS"]) or 1
    runner = Runner(app, count).start()

    def _stop(signum: int, frame: Any) -> None:
        log.info("signal %d: stopping workers", signum)
        runner.stopping.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    while not runner.stopping.wait(1):
        pass
    runner.stop(30.0)
