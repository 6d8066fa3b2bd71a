"""Jobs across real processes: `nazzil serve` killed and restarted, `nazzil worker`, the CLI."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.media import decode_ok, ffprobe_like
from tests.mediaserver import MediaServer, video_page
from tests.serve import NazzilServer

pytestmark = pytest.mark.slow


def _env(config: dict) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NAZZIL_")}
    env.update({f"NAZZIL_{k}": str(v) for k, v in config.items()})
    env.update(
        NAZZIL_RATE_LIMIT_JOBS="off",
        NAZZIL_HEARTBEAT="0.3",
        NAZZIL_STALE_AFTER="2",
        NAZZIL_LOG_LEVEL="INFO",
        NAZZIL_WORKERS="1",
        PYTHONUNBUFFERED="1",
    )
    return env


@pytest.fixture
def slow(media_server: MediaServer) -> Iterator[MediaServer]:
    """The media server, trickling /slow/ at 40 KB/s for this test."""
    media_server.slow_rate = 40 * 1024
    yield media_server
    media_server.slow_rate = 64 * 1024


def _wait(server: NazzilServer, job_ids: list[str], until: Any, timeout: float) -> list[dict]:
    deadline = time.monotonic() + timeout
    while True:
        found = [server.call("GET", f"/api/v1/jobs/{job_id}")[1] for job_id in job_ids]
        if all(until(job) for job in found):
            return found
        assert time.monotonic() < deadline, found
        time.sleep(0.1)


def _statuses(data: Path, ids: list[str]) -> list[str]:
    import sqlalchemy as sa

    engine = sa.create_engine(f"sqlite:///{data / 'nazzil.db'}")
    try:
        with engine.connect() as conn:
            rows = dict(conn.exec_driver_sql("SELECT id, status FROM jobs").all())
    finally:
        engine.dispose()
    return [rows[job_id] for job_id in ids]


def test_killed_server_finishes_every_job_after_restart(
    config: dict, slow: MediaServer, tmp_path: Path
) -> None:
    env = _env(config)
    server = NazzilServer(tmp_path, env, clean_env=True).start()
    try:
        ids = [
            server.call("POST", "/api/v1/jobs", {"url": slow.url("slow/sample.mp4")})[1]["id"]
            for _ in range(3)
        ]
        _wait(server, ids[:1], lambda j: (j["progress"]["downloaded_bytes"] or 0) > 0, 20)
        server.kill()
    finally:
        server.kill()
    assert _statuses(Path(config["DATA_DIR"]), ids) == ["running", "queued", "queued"]
    slow.slow_rate = 2 * 1024 * 1024
    restarted = NazzilServer(tmp_path, env, clean_env=True)
    restarted.cookie = server.cookie
    restarted.start()
    try:
        jobs = _wait(
            restarted, ids, lambda j: j["status"] in ("finished", "failed", "cancelled"), 45
        )
        assert [j["status"] for j in jobs] == ["finished"] * 3, jobs
        for job in jobs:
            stored = Path(config["DATA_DIR"]) / "files" / job["file"]["name"]
            assert abs(ffprobe_like(stored)["duration"] - 4.0) < 0.25
        assert decode_ok(Path(config["DATA_DIR"]) / "files" / jobs[0]["file"]["name"])
        leftovers = list((Path(config["DATA_DIR"]) / "tmp").iterdir())
        assert leftovers == []
    finally:
        restarted.stop()


@pytest.mark.parametrize("phase", ["downloading", "reading-formats"])
@pytest.mark.parametrize("server_name", ["gunicorn", "waitress"])
def test_sigterm_hands_running_jobs_back(
    config: dict, slow: MediaServer, tmp_path: Path, server_name: str, phase: str
) -> None:
    """A platform's SIGTERM stops `nazzil serve` cleanly: the running job goes back to queued.

    A page is open on the job's event stream, and the job is either downloading or still
    reading the file's head for its duration (a read that does not look at the stop flag).
    """
    if phase == "reading-formats":
        slow.slow_rate = 8 * 1024
    env = {**_env(config), "NAZZIL_SERVER": server_name}
    server = NazzilServer(tmp_path, env, clean_env=True).start()
    events = None
    try:
        assert f"mode, {server_name})" in server.log_text()
        job_id = server.call("POST", "/api/v1/jobs", {"url": slow.url("slow/sample.mp4")})[1]["id"]
        if phase == "downloading":
            _wait(server, [job_id], lambda j: (j["progress"]["downloaded_bytes"] or 0) > 0, 20)
        else:
            _wait(server, [job_id], lambda j: j["status"] == "running", 20)
            time.sleep(0.5)
            assert server.call("GET", f"/api/v1/jobs/{job_id}")[1]["progress"][
                "downloaded_bytes"
            ] in (None, 0)
        events = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        events.sendall(
            f"GET /api/v1/jobs/{job_id}/events HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Cookie: {server.cookie}\r\n\r\n".encode()
        )
        assert events.recv(100).startswith(b"HTTP/1.1 200")
        assert server.proc is not None
        started = time.monotonic()
        server.proc.send_signal(signal.SIGTERM)
        assert server.proc.wait(15) == 0
        took = time.monotonic() - started
    finally:
        if events is not None:
            events.close()
        server.kill()
    assert _statuses(Path(config["DATA_DIR"]), [job_id]) == ["queued"]
    assert took < 10, took
    assert list((Path(config["DATA_DIR"]) / "tmp").glob("*")) == []


def test_worker_process_runs_jobs_queued_by_a_web_node(
    config: dict, media_server: MediaServer, tmp_path: Path
) -> None:
    from nazzil.app import create_app

    env = _env(config)
    web = create_app({**config, "WORKERS": "0", "RATE_LIMIT_JOBS": "off"})
    client = web.test_client()
    job = client.post("/api/v1/jobs", json={"url": media_server.url("sample.mp4")}).json
    with (tmp_path / "worker.log").open("wb") as out:
        worker = subprocess.Popen(
            [sys.executable, "-m", "nazzil.cli", "worker"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 30
        while client.get(f"/api/v1/jobs/{job['id']}").json["status"] != "finished":
            assert worker.poll() is None, (tmp_path / "worker.log").read_text()
            assert time.monotonic() < deadline
            time.sleep(0.1)
    finally:
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(20) == 0
    assert client.get(f"/api/v1/jobs/{job['id']}/file").status_code == 200


@pytest.fixture
def cli(config: dict) -> Any:
    """Invoke the `nazzil` command in-process with the test settings in its environment."""
    from click.testing import CliRunner

    from nazzil.cli import main

    env = {f"NAZZIL_{k}": str(v) for k, v in config.items()}
    return lambda *args: CliRunner().invoke(main, list(args), env=env)


def test_cli_download_names_the_file_after_the_title(
    cli: Any, media_server: MediaServer, tmp_path: Path
) -> None:
    page = media_server.add_page("/cli/title", video_page("/sample.mp4", "Clip: one/two"))
    out = tmp_path / "out"
    result = cli("download", page, "-o", str(out))
    assert result.exit_code == 0, result.output
    path = Path(result.stdout.strip().splitlines()[-1])
    assert path.parent == out and path.name == "Clip one two.mp4"
    assert abs(ffprobe_like(path)["duration"] - 4.0) < 0.25
    assert [p.name for p in out.iterdir()] == [path.name]
    audio = cli(
        "download",
        media_server.url("sample.mp4"),
        "-f",
        "audio",
        "--audio-format",
        "opus",
        "-o",
        str(out),
    )
    assert audio.exit_code == 0, audio.output
    assert ffprobe_like(audio.stdout.strip().splitlines()[-1])["acodec"] == "opus"
    bad = cli("download", media_server.url("garbage.bin"), "-o", str(out))
    assert bad.exit_code == 1 and "unsupported_url" in bad.output


def test_cli_db_upgrade_creates_the_schema(cli: Any, config: dict) -> None:
    import sqlalchemy as sa

    result = cli("db", "upgrade")
    assert result.exit_code == 0, result.output
    engine = sa.create_engine(f"sqlite:///{Path(config['DATA_DIR']) / 'nazzil.db'}")
    try:
        assert {"jobs", "nazzil_alembic_version"} <= set(sa.inspect(engine).get_table_names())
    finally:
        engine.dispose()
    assert cli("db", "upgrade").exit_code == 0  # idempotent
