"""Download jobs end to end: real yt-dlp and ffmpeg on local media, in-process workers.

The suite runs on the single-server backend (SQLite + SqliteHuey) and on the cluster backend
(PostgreSQL + Redis on 127.0.0.1; skipped when they are not running, failing instead when
NAZZIL_REQUIRE_SERVICES=1).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import secrets
import socket
import time
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.media import decode_ok, ffprobe_like
from tests.mediaserver import MediaServer, video_page

FINAL = ("finished", "failed", "cancelled")
REQUIRE_SERVICES = os.environ.get("NAZZIL_REQUIRE_SERVICES") == "1"


# ------------------------------------------------------------------------------ backends


def _need(port: int, what: str) -> None:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
    except OSError:
        message = f"{what} is not running on 127.0.0.1:{port}"
        if REQUIRE_SERVICES:
            pytest.fail(message + " (NAZZIL_REQUIRE_SERVICES=1)")
        pytest.skip(message)


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A PostgreSQL database of its own for this test session, dropped at the end."""
    _need(5432, "PostgreSQL")
    import psycopg

    name = f"nazzil_test_{os.getpid()}_{secrets.token_hex(4)}"
    admin = "host=127.0.0.1 port=5432 user=postgres dbname=test"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["local", "cluster"])
def backend(request: pytest.FixtureRequest) -> Iterator[dict[str, str]]:
    """Settings of one backend: SQLite + SqliteHuey, or PostgreSQL + Redis."""
    if request.param == "local":
        yield {}
        return
    _need(6379, "Redis")
    pg = request.getfixturevalue("postgres_url")
    import redis
    import sqlalchemy as sa

    # One session-wide database: start each test from an empty jobs table.
    engine = sa.create_engine(pg)
    with engine.begin() as conn:
        if sa.inspect(conn).has_table("jobs"):
            conn.exec_driver_sql("DELETE FROM jobs")
    engine.dispose()
    name = f"nazzil_test_{secrets.token_hex(6)}"
    yield {"DATABASE_URL": pg, "REDIS_URL": "redis://127.0.0.1:6379/0", "QUEUE_NAME": name}
    client = redis.Redis(host="127.0.0.1", port=6379)
    keys = list(client.scan_iter(f"huey.*.{name}*"))
    if keys:
        client.delete(*keys)
    client.close()


@pytest.fixture
def jobs_config(config: dict, backend: dict) -> dict:
    """Settings for a jobs test: quick heartbeats, no request rate limit."""
    return {
        **config,
        **backend,
        "RATE_LIMIT_JOBS": "off",
        "RATE_LIMIT_PREVIEW": "off",
        "HEARTBEAT": "0.3",
        "STALE_AFTER": "3",
        "LOG_LEVEL": "INFO",
    }


class Jobs:
    """An app with running workers, and helpers to drive its jobs API."""

    def __init__(self, app: Any, runner: Any):
        self.app, self.runner = app, runner
        self.client = app.test_client()

    def create(self, client: Any = None, **body: Any) -> dict:
        response = (client or self.client).post("/api/v1/jobs", json=body)
        assert response.status_code == 202, response.get_data(as_text=True)
        assert response.headers["Location"] == f"/api/v1/jobs/{response.json['id']}"
        return response.json

    def get(self, job_id: str, client: Any = None) -> dict:
        response = (client or self.client).get(f"/api/v1/jobs/{job_id}")
        assert response.status_code == 200, response.get_data(as_text=True)
        return response.json

    def wait(
        self, job_id: str, until: Callable[[dict], bool] | None = None, timeout: float = 30
    ) -> dict:
        until = until or (lambda job: job["status"] in FINAL)
        deadline = time.monotonic() + timeout
        while True:
            job = self.get(job_id)
            if until(job):
                return job
            assert time.monotonic() < deadline, f"job stuck: {job}"
            time.sleep(0.05)

    def file(self, job: dict, dest: Path) -> Path:
        response = self.client.get(job["file"]["url"])
        assert response.status_code == 200
        path = dest / job["file"]["name"]
        path.write_bytes(response.data)
        return path

    @property
    def data_dir(self) -> Path:
        return Path(self.app.config["NAZZIL_DATA_DIR"])


def _start(config: dict, workers: int = 2) -> Jobs:
    from nazzil import db, queue
    from nazzil.app import create_app

    app = create_app(config)
    if workers:
        return Jobs(app, queue.Runner(app, workers).start())
    # No workers means no runner at all: its housekeeping thread would race the tests that
    # play the housekeeper themselves (requeue_stale, clean).
    db.ensure_schema(app)
    return Jobs(app, None)


def _stop(jobs: Jobs) -> None:
    from nazzil import db

    if jobs.runner is not None:
        jobs.runner.stop(10)
    db.dispose(jobs.app)


@pytest.fixture
def jobs(jobs_config: dict) -> Iterator[Jobs]:
    """An app with two in-process workers."""
    started = _start(jobs_config)
    yield started
    _stop(started)


@pytest.fixture
def slow(media_server: MediaServer) -> Iterator[MediaServer]:
    """The media server, whose /slow/ route trickles at 24 KB/s for this test."""
    media_server.slow_rate = 24 * 1024
    yield media_server
    media_server.slow_rate = 64 * 1024


def _leftovers(root: Path) -> list[str]:
    tmp = root / "tmp"
    return [str(p) for p in tmp.rglob("*")] if tmp.exists() else []


# ------------------------------------------------------------------------- format paths

FORMAT_CASES = {
    "progressive": ({"url": "sample.mp4"}, 4.0, True, True, None),
    "hls-240p": ({"url": "hls/master.m3u8", "format": "240p"}, 4.0, True, True, 240),
    "dash-merge": ({"url": "dash/manifest.mpd"}, 4.0, True, True, None),
    "audio-mp3": (
        {"url": "sample.mp4", "format": "audio", "audio_format": "mp3"},
        4.0,
        False,
        True,
        None,
    ),
    "trimmed": ({"url": "sample.mp4", "start": 1, "end": 3}, 2.0, True, True, None),
}


@pytest.mark.parametrize("case", list(FORMAT_CASES))
def test_format_paths(case: str, jobs: Jobs, media_server: MediaServer, tmp_path: Path) -> None:
    body, duration, video, audio, height = FORMAT_CASES[case]
    body = {**body, "url": media_server.url(body["url"])}
    job = jobs.wait(jobs.create(**body)["id"])
    assert job["status"] == "finished", job
    assert job["progress"]["percent"] == 100.0 and job["error"] is None
    assert job["finished_at"] and job["title"]
    path = jobs.file(job, tmp_path)
    assert path.stat().st_size == job["file"]["size"]
    probe = ffprobe_like(path)
    assert abs(probe["duration"] - duration) < 0.25, probe
    assert (probe["video"], probe["audio"]) == (video, audio), probe
    if height:
        assert probe["height"] == height
    if case == "audio-mp3":
        assert probe["acodec"] == "mp3" and job["file"]["name"].endswith(".mp3")
        assert job["file"]["content_type"] == "audio/mpeg"
    else:
        assert job["file"]["name"].endswith(".mp4")
    assert decode_ok(path)
    assert _leftovers(jobs.data_dir) == []


# ------------------------------------------------------------------------ names, Range


def test_arabic_title_gives_a_safe_unique_name(jobs: Jobs, media_server: MediaServer) -> None:
    title = 'فيديو: "تجربة" 1/2'
    page = media_server.add_page("/jobs/arabic", video_page("/sample.mp4", title))
    first = jobs.wait(jobs.create(url=page)["id"])
    second = jobs.wait(jobs.create(url=page)["id"])
    assert first["status"] == second["status"] == "finished"
    name = first["file"]["name"]
    assert "تجربة" in name and "فيديو" in name and name.endswith(".mp4")
    assert not set('/\\:"') & set(name)
    assert second["file"]["name"] != name  # unique
    for job in (first, second):
        stored = jobs.data_dir / "files" / job["file"]["name"]
        assert stored.is_file() and stored.resolve().is_relative_to(jobs.data_dir.resolve())
    response = jobs.client.get(first["file"]["url"])
    disposition = response.headers["Content-Disposition"]
    assert disposition.startswith('attachment; filename="')
    ascii_part = disposition.split('filename="', 1)[1].split('"', 1)[0]
    assert ascii_part.isascii() and ascii_part.endswith(".mp4")
    encoded = disposition.split("filename*=UTF-8''", 1)[1]
    assert urllib.parse.unquote(encoded, errors="strict") == name


def test_file_answers_range_requests(jobs: Jobs, media_server: MediaServer) -> None:
    job = jobs.wait(jobs.create(url=media_server.url("sample.mp4"))["id"])
    whole = jobs.client.get(job["file"]["url"]).data
    part = jobs.client.get(job["file"]["url"], headers={"Range": "bytes=100-1099"})
    assert part.status_code == 206
    assert part.headers["Content-Range"] == f"bytes 100-1099/{len(whole)}"
    assert part.data == whole[100:1100]
    assert part.headers["Accept-Ranges"] == "bytes"
    beyond = jobs.client.get(job["file"]["url"], headers={"Range": f"bytes={len(whole) + 5}-"})
    assert beyond.status_code == 416


# ------------------------------------------------------------------------------ control


def test_cancel_while_running_stops_and_leaves_nothing(jobs: Jobs, slow: MediaServer) -> None:
    job = jobs.create(url=slow.url("slow/sample.mp4"))
    jobs.wait(job["id"], lambda j: (j["progress"]["downloaded_bytes"] or 0) > 0, timeout=20)
    response = jobs.client.post(f"/api/v1/jobs/{job['id']}/cancel")
    assert response.status_code == 200 and response.json["status"] == "cancelled"
    cancelled_at = time.monotonic()
    deadline = cancelled_at + 5
    while _leftovers(jobs.data_dir) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _leftovers(jobs.data_dir) == []
    assert time.monotonic() - cancelled_at < 5
    # The worker is free again: the next job runs at once.
    after = jobs.wait(jobs.create(url=slow.url("sample.mp4"))["id"])
    assert after["status"] == "finished"
    final = jobs.get(job["id"])
    assert final["status"] == "cancelled" and final["file"] is None
    assert list((jobs.data_dir / "files").iterdir()) == [
        jobs.data_dir / "files" / after["file"]["name"]
    ]
    again = jobs.client.post(f"/api/v1/jobs/{after['id']}/cancel")
    assert again.status_code == 409 and again.json["error"]["code"] == "conflict"


def test_retry_failed_job(jobs: Jobs, media_server: MediaServer) -> None:
    path = f"/jobs/retry-{secrets.token_hex(4)}"
    media_server.add_page(path, "gone", status=404)
    job = jobs.wait(jobs.create(url=media_server.url(path))["id"])
    assert job["status"] == "failed" and job["error"]["code"] == "upstream_error"
    media_server.add_page(path, video_page("/sample.mp4", "Back again"))
    response = jobs.client.post(f"/api/v1/jobs/{job['id']}/retry")
    assert response.status_code == 202
    assert response.json["status"] == "queued" and response.json["error"] is None
    done = jobs.wait(job["id"])
    assert done["status"] == "finished" and done["title"] == "Back again"
    again = jobs.client.post(f"/api/v1/jobs/{job['id']}/retry")
    assert again.status_code == 409


def test_delete_removes_row_and_file(jobs: Jobs, media_server: MediaServer) -> None:
    job = jobs.wait(jobs.create(url=media_server.url("sample.mp4"))["id"])
    stored = jobs.data_dir / "files" / job["file"]["name"]
    assert stored.is_file()
    response = jobs.client.delete(f"/api/v1/jobs/{job['id']}")
    assert response.status_code == 204 and response.data == b""
    assert not stored.exists()
    assert jobs.client.get(f"/api/v1/jobs/{job['id']}").status_code == 404
    assert jobs.client.delete(f"/api/v1/jobs/{job['id']}").status_code == 404


def test_devices_see_only_their_jobs(jobs: Jobs, media_server: MediaServer) -> None:
    mine = jobs.wait(jobs.create(url=media_server.url("sample.mp4"))["id"])
    later = jobs.create(url=media_server.url("audio.m4a"), format="audio")
    jobs.wait(later["id"])
    listed = jobs.client.get("/api/v1/jobs").json["jobs"]
    assert [j["id"] for j in listed] == [later["id"], mine["id"]]  # newest first
    other = jobs.app.test_client()
    assert other.get("/api/v1/jobs").json == {"jobs": []}
    base = f"/api/v1/jobs/{mine['id']}"
    for method, url in [
        ("get", base),
        ("get", base + "/file"),
        ("get", base + "/events"),
        ("post", base + "/cancel"),
        ("post", base + "/retry"),
        ("delete", base),
    ]:
        response = getattr(other, method)(url)
        assert response.status_code == 404, (method, url)
        assert response.json["error"]["code"] == "not_found"
    assert jobs.get(mine["id"])["status"] == "finished"


def test_event_stream_follows_job_to_the_end(jobs: Jobs, slow: MediaServer) -> None:
    slow.slow_rate = 96 * 1024
    job = jobs.create(url=slow.url("slow/sample.mp4"))
    response = jobs.client.get(f"/api/v1/jobs/{job['id']}/events")
    assert response.status_code == 200
    assert response.mimetype == "text/event-stream"
    text = response.get_data(as_text=True)  # returns only when the stream ends
    events = [
        json.loads(line[len("data: ") :]) for line in text.splitlines() if line.startswith("data: ")
    ]
    statuses = [e["status"] for e in events]
    assert statuses[-1] == "finished" and events[-1]["file"]
    assert "running" in statuses and len(events) >= 3
    order = {"queued": 0, "running": 1, "finished": 2}
    assert [order[s] for s in statuses] == sorted(order[s] for s in statuses)
    percents = [
        e["progress"]["percent"]
        for e in events
        if e["status"] == "running" and e["progress"]["percent"] is not None
    ]
    assert percents == sorted(percents)
    # A finished job's stream is one event long.
    again = jobs.client.get(f"/api/v1/jobs/{job['id']}/events").get_data(as_text=True)
    assert again.count("data: ") == 1


# --------------------------------------------------------------- single-server specifics


@pytest.fixture
def local_jobs(config: dict) -> Iterator[Callable[..., Jobs]]:
    """Start an app with workers on the local backend with extra settings."""
    started: list[Jobs] = []

    def start(workers: int = 2, **extra: str) -> Jobs:
        found = _start(
            {**config, "RATE_LIMIT_JOBS": "off", "HEARTBEAT": "0.3", "STALE_AFTER": "2", **extra},
            workers,
        )
        started.append(found)
        return found

    yield start
    for found in started:
        _stop(found)


def test_dropped_connection_resumes_with_range(
    local_jobs: Callable[..., Jobs], media_server: MediaServer, media_root: Path, tmp_path: Path
) -> None:
    jobs = local_jobs()
    media_server.reset_drops()
    media_server.drop_skip = 1  # yt-dlp probes a direct link with one plain GET first
    try:
        media_server.clear()
        job = jobs.wait(jobs.create(url=media_server.url("drop/40000/sample.mp4"))["id"])
    finally:
        media_server.drop_skip = 0
    assert job["status"] == "finished", job
    assert media_server.drop_count == 1
    ranges = [
        r.headers.get("Range") for r in media_server.requests if r.path == "/drop/40000/sample.mp4"
    ]
    assert "bytes=40000-" in ranges, ranges
    path = jobs.file(job, tmp_path)
    assert path.read_bytes() == (media_root / "sample.mp4").read_bytes()


def test_max_filesize_without_content_length(
    local_jobs: Callable[..., Jobs], media_server: MediaServer
) -> None:
    jobs = local_jobs(MAX_FILESIZE="40K")
    job = jobs.wait(jobs.create(url=media_server.url("nolength/sample.mp4"))["id"])
    assert job["status"] == "failed" and job["error"]["code"] == "too_large", job
    assert _leftovers(jobs.data_dir) == []
    assert not list((jobs.data_dir / "files").glob("*"))


def test_max_duration_refused_before_download(
    local_jobs: Callable[..., Jobs], media_server: MediaServer
) -> None:
    jobs = local_jobs(MAX_DURATION="2")
    media_server.clear()
    job = jobs.wait(jobs.create(url=media_server.url("hls/master.m3u8"))["id"])
    assert job["status"] == "failed" and job["error"]["code"] == "too_long", job
    assert not [p for p in media_server.paths() if p.endswith(".ts")]


def test_unknown_format_id_fails_with_a_code(
    local_jobs: Callable[..., Jobs], media_server: MediaServer
) -> None:
    jobs = local_jobs()
    job = jobs.wait(jobs.create(url=media_server.url("hls/master.m3u8"), format="nope-9")["id"])
    assert job["status"] == "failed" and job["error"]["code"] == "format_unavailable", job
    assert job["file"] is None and job["finished_at"]


def test_limits_on_new_jobs(local_jobs: Callable[..., Jobs], media_server: MediaServer) -> None:
    jobs = local_jobs(workers=0, MAX_QUEUED_PER_DEVICE="2")
    url = media_server.url("sample.mp4")
    jobs.create(url=url)
    jobs.create(url=url)
    capped = jobs.client.post("/api/v1/jobs", json={"url": url})
    assert capped.status_code == 429 and capped.json["error"]["code"] == "rate_limited"
    assert capped.headers["Retry-After"]
    other = jobs.app.test_client()
    assert other.post("/api/v1/jobs", json={"url": url}).status_code == 202
    jobs.app.config["NAZZIL_MIN_FREE_DISK"] = 2**62
    full = other.post("/api/v1/jobs", json={"url": url})
    assert full.status_code == 507 and full.json["error"]["code"] == "insufficient_storage"


@pytest.mark.parametrize(
    "body, field",
    [
        ({}, "url"),
        ({"url": 5}, "url"),
        ({"url": "x", "format": "weird format"}, "format"),
        ({"url": "x", "format": "audio", "audio_format": "wav"}, "audio_format"),
        ({"url": "x", "start": -1}, "start"),
        ({"url": "x", "start": 5, "end": 2}, "end"),
        ({"url": "x", "end": "3"}, "end"),
    ],
)
def test_invalid_job_requests(body: dict, field: str, client: Any) -> None:
    response = client.post("/api/v1/jobs", json=body)
    assert response.status_code == 400
    assert response.json["error"]["code"] == "invalid_request"
    assert field in response.json["error"]["message"]


def test_invalid_and_blocked_urls(client: Any, canary: MediaServer) -> None:
    bad = client.post("/api/v1/jobs", json={"url": "ftp://example.com/x"})
    assert bad.status_code == 400 and bad.json["error"]["code"] == "invalid_url"
    blocked = client.post("/api/v1/jobs", json={"url": canary.url("sample.mp4")})
    assert blocked.status_code == 403 and blocked.json["error"]["code"] == "blocked_address"
    assert canary.requests == []


def test_jobs_disabled_on_serverless(config: dict) -> None:
    from nazzil.app import create_app

    client = create_app({**config, "MODE": "serverless"}).test_client()
    for method, url in [
        ("get", "/api/v1/jobs"),
        ("post", "/api/v1/jobs"),
        ("get", "/api/v1/jobs/abc"),
        ("get", "/api/v1/jobs/abc/events"),
    ]:
        response = getattr(client, method)(url)
        assert response.status_code == 503, url
        assert response.json["error"]["code"] == "jobs_disabled"
    assert client.get("/readyz").status_code == 200


def test_readiness_names_database_queue_and_storage(client: Any) -> None:
    assert client.get("/readyz").status_code == 200
    checks = client.application.extensions["nazzil"]["ready_checks"]
    assert {"database", "queue", "storage"} <= set(checks)


def test_openapi_describes_job_endpoints(client: Any) -> None:
    spec = client.get("/api/v1/openapi.json").json
    for path in [
        "/api/v1/jobs",
        "/api/v1/jobs/{job_id}",
        "/api/v1/jobs/{job_id}/cancel",
        "/api/v1/jobs/{job_id}/retry",
        "/api/v1/jobs/{job_id}/events",
        "/api/v1/jobs/{job_id}/file",
    ]:
        assert path in spec["paths"]
    assert "Job" in spec["components"]["schemas"]


# ----------------------------------------------------------------------- nothing lost


def _backdate(app: Any, job_id: str, **columns: dt.datetime) -> None:
    import sqlalchemy as sa

    from nazzil import db, jobs

    with db.session(app) as s:
        s.execute(sa.update(jobs.Job).where(jobs.Job.id == job_id).values(**columns))


def test_job_of_a_dead_worker_runs_again(
    local_jobs: Callable[..., Jobs], media_server: MediaServer
) -> None:
    from nazzil import jobs as repo
    from nazzil import queue

    jobs = local_jobs(workers=0)
    job = jobs.create(url=media_server.url("sample.mp4"))
    old = dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=5)
    # A worker claims the job, then "dies": nobody heartbeats it any more.
    assert queue.get_huey(jobs.app).dequeue().id == job["id"]
    assert repo.claim(jobs.app, job["id"], repo.new_lease(), "dead:1:w") is not None
    _backdate(jobs.app, job["id"], heartbeat_at=old)
    assert jobs.get(job["id"])["status"] == "running"
    with jobs.app.app_context():
        assert queue.requeue_stale(jobs.app) == [job["id"]]
    assert jobs.get(job["id"])["status"] == "queued"
    runner = queue.Runner(jobs.app, 1).start()
    try:
        done = jobs.wait(job["id"])
    finally:
        runner.stop()
    assert done["status"] == "finished"


def test_job_out_of_attempts_fails(
    local_jobs: Callable[..., Jobs], media_server: MediaServer
) -> None:
    from nazzil import jobs as repo
    from nazzil import queue

    jobs = local_jobs(workers=0, MAX_ATTEMPTS="1")
    job = jobs.create(url=media_server.url("sample.mp4"))
    assert repo.claim(jobs.app, job["id"], repo.new_lease(), "dead:1:w") is not None
    _backdate(
        jobs.app, job["id"], heartbeat_at=dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=5)
    )
    with jobs.app.app_context():
        assert queue.requeue_stale(jobs.app) == []
    failed = jobs.get(job["id"])
    assert failed["status"] == "failed" and failed["error"]["code"] == "internal_error"


def test_job_the_queue_lost_is_sent_again(
    local_jobs: Callable[..., Jobs], media_server: MediaServer
) -> None:
    from nazzil import jobs as repo
    from nazzil import queue
    from nazzil.formats import choose

    jobs = local_jobs(workers=0)
    job = repo.create(
        jobs.app,
        device="lost-device",
        url=media_server.url("sample.mp4"),
        choice=choose("best"),
        start=None,
        end=None,
    )
    _backdate(
        jobs.app, job.id, updated_at=dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=5)
    )
    with jobs.app.app_context():
        assert queue.requeue_stale(jobs.app) == [job.id]
        assert queue.pending_ids(jobs.app) == {job.id}
        assert queue.requeue_stale(jobs.app) == []  # sent once, not again


def test_retention_removes_old_files(
    local_jobs: Callable[..., Jobs], media_server: MediaServer
) -> None:
    from nazzil import queue

    jobs = local_jobs(RETENTION="1h")
    job = jobs.wait(jobs.create(url=media_server.url("sample.mp4"))["id"])
    stored = jobs.data_dir / "files" / job["file"]["name"]
    _backdate(
        jobs.app, job["id"], finished_at=dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=2)
    )
    with jobs.app.app_context():
        queue.clean(jobs.app)
    assert not stored.exists()
    expired = jobs.get(job["id"])
    assert expired["status"] == "finished" and expired["file"] is None
    response = jobs.client.get(f"/api/v1/jobs/{job['id']}/file")
    assert response.status_code == 404


def test_nothing_is_created_at_import_or_app_creation(config: dict, tmp_path: Path) -> None:
    from nazzil.app import create_app

    data = Path(config["DATA_DIR"])
    app = create_app(config)
    ext = app.extensions["nazzil"]
    assert not {"db_engine", "huey", "runner", "storage"} & set(ext)
    assert not data.exists() or not any(data.iterdir())


def test_s3_storage_keeps_serves_and_deletes_files(
    config: dict, media_server: MediaServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    moto = pytest.importorskip("moto", reason="moto fakes S3 here")
    for name, value in [
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
        ("AWS_DEFAULT_REGION", "us-east-1"),
    ]:
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    with moto.mock_aws():
        import boto3

        s3 = boto3.client("s3")
        s3.create_bucket(Bucket="nazzil-media")
        jobs = _start(
            {**config, "RATE_LIMIT_JOBS": "off", "STORAGE_URL": "s3://nazzil-media/files"},
            workers=1,
        )
        try:
            page = media_server.add_page("/jobs/s3", video_page("/sample.mp4", "نهر: جارٍ"))
            job = jobs.wait(jobs.create(url=page)["id"])
            assert job["status"] == "finished", job
            key = f"files/{job['id']}/{job['file']['name']}"
            assert (
                s3.head_object(Bucket="nazzil-media", Key=key)["ContentLength"]
                == (job["file"]["size"])
            )
            response = jobs.client.get(job["file"]["url"])
            assert response.status_code == 302
            query = urllib.parse.parse_qs(urllib.parse.urlsplit(response.location).query)
            assert "filename*=UTF-8''" in query["response-content-disposition"][0]
            assert jobs.client.get("/readyz").status_code == 200
            assert jobs.client.delete(f"/api/v1/jobs/{job['id']}").status_code == 204
            assert s3.list_objects_v2(Bucket="nazzil-media").get("KeyCount") == 0
            assert _leftovers(jobs.data_dir) == []
        finally:
            _stop(jobs)


def test_a_claimed_job_fails_when_its_storage_is_unusable(
    tmp_path: Path, config, monkeypatch
) -> None:
    """A job whose worker cannot make its work directory ends failed, never stuck running."""
    from nazzil import db, jobs, queue, storage
    from nazzil.app import create_app
    from nazzil.errors import JobsDisabled
    from nazzil.formats import choose

    app = create_app({**config, "DATABASE_URL": f"sqlite:///{tmp_path / 'jobs.db'}"})

    def unusable(app):  # noqa: ANN001, ANN202
        raise JobsDisabled("Jobs need a writable data directory.")

    with app.app_context():
        db.ensure_schema(app)
        job = jobs.create(
            app, device="device-1", url="http://127.0.0.1:9/x.mp4", choice=choose(),
            start=None, end=None,
        )  # fmt: skip
        monkeypatch.setattr(storage, "work_root", unusable)
        queue.run_job(app, job.id)
        done = jobs.get(app, job.id, "device-1")
    assert done.status == "failed"
    assert jobs.to_json(done)["error"]["code"] == "jobs_disabled"
