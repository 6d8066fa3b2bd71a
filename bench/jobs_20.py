"""Benchmark 20 small jobs queued at once on `nazzil serve` with NAZZIL_WORKERS=4.

Prints the total time from the first POST to the last job final, the peak RSS of the server
process (VmHWM, and its growth over the idle server), and how many jobs finished (target: all
20, none lost). The mix covers every path: progressive, HLS 240p, DASH merge, audio to mp3.
As a baseline it prints the time of the same 20 downloads as `yt-dlp` processes, 4 at a time.

Run:  .venv/bin/python bench/jobs_20.py [--jobs 20] [--workers 4]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from job_300mb import Nazzil  # noqa: E402
from tests.media import build_media  # noqa: E402
from tests.mediaserver import MediaServer  # noqa: E402

MIX = [
    ("sample.mp4", {}),
    ("hls/master.m3u8", {"format": "240p"}),
    ("dash/manifest.mpd", {}),
    ("sample.mp4", {"format": "audio", "audio_format": "mp3"}),
]


def status_kib(pid: int, field: str) -> int:
    """A memory figure of a process from /proc/<pid>/status, in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def ytdlp_batch(urls: list[tuple[str, dict]], out: Path, parallel: int) -> float:
    """Time the same downloads as yt-dlp processes, `parallel` at a time."""
    exe = Path(sys.executable).with_name("yt-dlp")
    ffmpeg = __import__("imageio_ffmpeg").get_ffmpeg_exe()

    def one(item: tuple[int, tuple[str, dict]]) -> None:
        n, (url, body) = item
        cmd = [
            str(exe),
            "-q",
            "--no-warnings",
            "--no-progress",
            "--ffmpeg-location",
            ffmpeg,
            "-o",
            str(out / f"{n}.%(ext)s"),
        ]
        if body.get("format") == "240p":
            cmd += ["-f", "bv*[height<=240]+ba/b[height<=240]"]
        if body.get("format") == "audio":
            cmd += ["-x", "--audio-format", "mp3"]
        subprocess.run([*cmd, url], check=True, env={**os.environ, "YTDLP_NO_PLUGINS": "1"})

    started = time.perf_counter()
    with ThreadPoolExecutor(parallel) as pool:
        list(pool.map(one, enumerate(urls)))
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--jobs", type=int, default=20)
    parser.add_argument("--workers", type=int, default=4)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="nazzil-bench-jobs-"))
    try:
        build_media(work / "media")
        with MediaServer(work / "media") as server:
            nazzil = Nazzil(work, f"127.0.0.1:{server.port}", args.workers)
            try:
                # Warm up: imports yt-dlp and ffmpeg paths once, like a server that has run.
                nazzil.run_jobs([server.url("sample.mp4?warmup")])
                # gunicorn's arbiter only watches its worker, which does all the work.
                worker = nazzil.pid
                arbiter = status_kib(nazzil.proc.pid, "VmRSS") if worker != nazzil.proc.pid else 0
                idle = status_kib(worker, "VmRSS")
                batch = [
                    (server.url(path + f"?n={n}"), body)
                    for n, (path, body) in ((n, MIX[n % len(MIX)]) for n in range(args.jobs))
                ]
                started = time.perf_counter()
                ids = []
                for url, body in batch:
                    status, job = nazzil.call("POST", "/api/v1/jobs", {"url": url, **body})
                    assert status == 202, (status, job)
                    ids.append(job["id"])
                done: dict[str, dict] = {}
                deadline = time.monotonic() + 300
                while len(done) < len(ids) and time.monotonic() < deadline:
                    for job_id in ids:
                        if job_id not in done:
                            job = nazzil.call("GET", f"/api/v1/jobs/{job_id}")[1]
                            if job["status"] in ("finished", "failed", "cancelled"):
                                done[job_id] = job
                    time.sleep(0.05)
                total = time.perf_counter() - started
                peak = status_kib(worker, "VmHWM")
            finally:
                nazzil.stop()
            baseline = ytdlp_batch(batch, work / "ytdlp", args.workers)
        finished = sum(1 for job in done.values() if job["status"] == "finished")
        failed = [job for job in done.values() if job["status"] != "finished"]
        lost = len(ids) - len(done)
        print(
            f"{args.jobs} jobs, {args.workers} workers (mix: progressive, HLS 240p, DASH "
            "merge, audio->mp3)"
        )
        print(f"{'':32}{'nazzil':>10}{'yt-dlp x4':>12}")
        print(f"{'total seconds':32}{total:10.2f}{baseline:12.2f}")
        print(f"{'peak server RSS (VmHWM), MB':32}{peak / 1024:10.1f}")
        print(f"{'idle server RSS before, MB':32}{idle / 1024:10.1f}")
        if arbiter:
            print(f"{'  + gunicorn arbiter RSS, MB':32}{arbiter / 1024:10.1f}")
        print(
            f"finished {finished}/{len(ids)}, failed {len(failed)}, lost {lost}: "
            f"{'OK' if finished == len(ids) else 'MISSED'}"
        )
        for job in failed:
            print("  failed:", job["id"], job["error"])
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
