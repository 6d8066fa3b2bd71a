"""Benchmark one 300 MB download as a nazzil job against `yt-dlp URL` as a process.

Both fetch the same progressive MP4 from the same local media server into files on the same
disk. nazzil's time runs from POST /api/v1/jobs on a warm `nazzil serve` (one worker) to the
job being finished (file moved into DATA_DIR/files); yt-dlp's is the wall time of the process.
Target: nazzil <= 1.15x yt-dlp. Rounds alternate so background load hits both alike.

Run:  .venv/bin/python bench/job_300mb.py [--rounds N] [--size-mb 300] [--keep]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.media import make_big_file  # noqa: E402
from tests.mediaserver import MediaServer  # noqa: E402
from tests.serve import NazzilServer  # noqa: E402

MB = 1000 * 1000


class Nazzil(NazzilServer):
    """A warm `nazzil serve` in work/ (data in work/data) that runs jobs."""

    def __init__(self, work: Path, trusted: str, workers: int) -> None:
        env = {
            "NAZZIL_SECRET_KEY": "bench-secret-key-" + "x" * 16,
            "NAZZIL_TRUSTED_HOSTS": trusted,
            "NAZZIL_WORKERS": str(workers),
            "NAZZIL_RATE_LIMIT_JOBS": "off",
            "NAZZIL_MAX_QUEUED_PER_DEVICE": "0",
            "NAZZIL_LOG_LEVEL": "WARNING",
            "NAZZIL_MIN_FREE_DISK": "0",
        }
        super().__init__(work, env, clean_env=True, ready="/readyz", timeout=60)
        self.start()

    def run_jobs(self, urls: list[str], poll: float = 0.05) -> tuple[float, list[dict]]:
        """Create jobs for urls at once; return seconds until all are final, and the jobs."""
        started = time.perf_counter()
        ids = []
        for url in urls:
            status, job = self.call("POST", "/api/v1/jobs", {"url": url})
            if status != 202:
                raise SystemExit(f"job refused: {status} {job}")
            ids.append(job["id"])
        pending = set(ids)
        final: dict[str, dict] = {}
        while pending:
            for job_id in list(pending):
                job = self.call("GET", f"/api/v1/jobs/{job_id}")[1]
                if job["status"] in ("finished", "failed", "cancelled"):
                    final[job_id] = job
                    pending.discard(job_id)
            if pending:
                time.sleep(poll)
        return time.perf_counter() - started, [final[i] for i in ids]


def ytdlp(url: str, out: Path) -> float:
    """Time `yt-dlp URL` as a process writing into out."""
    out.mkdir(parents=True, exist_ok=True)
    exe = Path(sys.executable).with_name("yt-dlp")
    cmd = [
        str(exe) if exe.exists() else "yt-dlp",
        "-q",
        "--no-progress",
        "--no-part",
        "-o",
        str(out / "%(title)s.%(ext)s"),
        url,
    ]
    started = time.perf_counter()
    subprocess.run(cmd, check=True, env={**os.environ, "YTDLP_NO_PLUGINS": "1"})
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--size-mb", type=int, default=300)
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="nazzil-bench-job-"))
    try:
        media = work / "media"
        t0 = time.perf_counter()
        big = make_big_file(media / "big.mp4", args.size_mb * MB, faststart=True)
        print(f"made {big.stat().st_size / MB:.0f} MB in {time.perf_counter() - t0:.1f}s")
        with MediaServer(media) as server:
            url = server.url("big.mp4")
            nazzil = Nazzil(work, f"127.0.0.1:{server.port}", 1)
            try:
                nazzil.run_jobs([server.url("big.mp4?warmup")])  # imports yt-dlp, migrations
                files = work / "data" / "files"
                shutil.rmtree(files, ignore_errors=True)
                ours, theirs = [], []
                for n in range(args.rounds):
                    seconds, (job,) = nazzil.run_jobs([url])
                    if job["status"] != "finished" or job["file"]["size"] != big.stat().st_size:
                        raise SystemExit(f"job did not finish well: {job}")
                    ours.append(seconds)
                    shutil.rmtree(files, ignore_errors=True)
                    theirs.append(ytdlp(url, work / "ytdlp"))
                    shutil.rmtree(work / "ytdlp", ignore_errors=True)
                    print(f"round {n + 1}: nazzil job {ours[-1]:.2f}s   yt-dlp {theirs[-1]:.2f}s")
            finally:
                nazzil.stop()
        a, b = statistics.median(ours), statistics.median(theirs)
        ratio = a / b
        print()
        print(f"{'':24}{'nazzil job':>12}{'yt-dlp':>12}")
        print(f"{'median seconds':24}{a:12.2f}{b:12.2f}")
        print(f"{'MB/s':24}{args.size_mb / a:12.0f}{args.size_mb / b:12.0f}")
        print(
            f"ratio nazzil/yt-dlp: {ratio:.2f}x (target <= 1.15x): "
            f"{'OK' if ratio <= 1.15 else 'MISSED'}"
        )
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
