"""Benchmark /api/v1/stream through a real `nazzil serve` against curl from the same server.

Prints, side by side:
  1. throughput of a 300 MB progressive file: curl straight from the local media server vs
     curl through /api/v1/stream (target: nazzil >= 0.8x curl);
  2. peak growth of the server's RSS (VmRSS from /proc) while streaming 300 MB and 1 GB
     (target: at most 50 MB, and about the same for both sizes);
  3. 20 streams at once: all complete, aggregate throughput.

Run:  .venv/bin/python bench/stream_throughput.py [--keep] [--rounds N]
The big files are made in a temporary directory and deleted at the end (unless --keep).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import quote

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.media import make_big_file  # noqa: E402
from tests.mediaserver import MediaServer  # noqa: E402
from tests.serve import NazzilServer  # noqa: E402

MB = 1000 * 1000


def rss_kib(pid: int) -> int:
    """Resident set size of a process in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


class Sampler(threading.Thread):
    """Sample a process's RSS every 20 ms and keep the peak."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid, self.peak, self._done = pid, 0, threading.Event()

    def run(self) -> None:
        while not self._done.is_set():
            self.peak = max(self.peak, rss_kib(self.pid))
            time.sleep(0.02)

    def stop(self) -> int:
        self._done.set()
        self.join()
        return self.peak


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def curl(url: str) -> tuple[float, int, str]:
    """Fetch url with curl to /dev/null; return seconds, bytes and the HTTP status."""
    out = subprocess.run(
        ["curl", "-s", "-o", "/dev/null", "-w", "%{time_total} %{size_download} %{http_code}", url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return float(out[0]), int(out[1]), out[2]


def start_server(media: MediaServer, workdir: Path) -> NazzilServer:
    """A started `nazzil serve` with no size or duration limit, trusting the media server."""
    env = {
        "NAZZIL_SECRET_KEY": "bench-secret-key-bench-secret-key",
        "NAZZIL_TRUSTED_HOSTS": f"127.0.0.1:{media.port}", "NAZZIL_MAX_FILESIZE": "0",
        "NAZZIL_MAX_DURATION": "0", "NAZZIL_LOG_LEVEL": "WARNING",
        "NAZZIL_RATE_LIMIT_STREAM": "off",
    }  # fmt: skip
    return NazzilServer(workdir, env).start()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="rounds of the 300 MB comparison")
    parser.add_argument("--keep", action="store_true", help="keep the big files")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="nazzil-bench-"))
    media_dir = workdir / "media"
    try:
        t = time.perf_counter()
        make_big_file(media_dir / "f300.mp4", 300 * MB)
        make_big_file(media_dir / "f1000.mp4", 1000 * MB)
        make_big_file(media_dir / "f50.mp4", 50 * MB)
        print(f"made test files in {time.perf_counter() - t:.1f} s")
        with MediaServer(media_dir) as media, start_server(media, workdir) as server:
            run(media, server.pid, server.port, args.rounds)
    finally:
        if args.keep:
            print(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


def run(media: MediaServer, pid: int, port: int, rounds: int) -> None:
    def via_nazzil(name: str) -> str:
        return f"http://127.0.0.1:{port}/api/v1/stream?url={quote(media.url(name), safe='')}"

    curl(via_nazzil("f50.mp4"))  # warm up: imports, first yt-dlp extraction
    base = rss_kib(pid)

    print("\n1. 300 MB progressive, alternating (MB/s, decimal)")
    print(
        "   'first' streams a URL nazzil has not seen (a fresh query string: the whole "
        "extraction runs);\n   'again' repeats it within NAZZIL_PREVIEW_CACHE_TTL (the formats "
        "are remembered). Target on 'first'."
    )
    print(
        f"{'round':>5} {'curl direct':>12} {'first':>8} {'ratio':>6} {'again':>8} {'ratio':>6}"
        f" {'CPU first':>10}"
    )
    first, again, cpu = [], [], []
    for i in range(rounds):
        t0, n0, _ = curl(media.url("f300.mp4"))
        fresh = f"f300.mp4?round={i}"
        c0 = cpu_seconds(pid)
        t1, n1, s1 = curl(via_nazzil(fresh))
        cpu.append(cpu_seconds(pid) - c0)
        t2, n2, s2 = curl(via_nazzil(fresh))
        assert n0 == n1 == n2 == 300 * MB and s1 == s2 == "200", (n0, n1, n2, s1, s2)
        direct = n0 / t0 / MB
        first.append(n1 / t1 / MB / direct)
        again.append(n2 / t2 / MB / direct)
        print(
            f"{i + 1:>5} {direct:>12.0f} {n1 / t1 / MB:>8.0f} {first[-1]:>6.2f} "
            f"{n2 / t2 / MB:>8.0f} {again[-1]:>6.2f} {cpu[-1]:>9.2f}s"
        )
    print(
        f"median ratio: first {sorted(first)[len(first) // 2]:.2f} (target >= 0.80), again "
        f"{sorted(again)[len(again) // 2]:.2f}; nazzil CPU per GB "
        f"{sorted(cpu)[len(cpu) // 2] / 0.3:.2f} s; load average {os.getloadavg()[0]:.1f}"
    )

    print(
        "\n2. server RSS while streaming (KiB; after the warm-up it was "
        f"{base} KiB; freed buffers stay in the allocator's per-thread arenas, so 'before' "
        "is measured right before each stream)"
    )
    print(f"{'size':>6} {'before':>10} {'peak':>10} {'growth':>10} {'MB/s':>7}")
    for name, label in (("f300.mp4", "300 MB"), ("f1000.mp4", "1 GB")):
        before = rss_kib(pid)
        sampler = Sampler(pid)
        sampler.start()
        took, n, _ = curl(via_nazzil(name))
        peak = sampler.stop()
        print(
            f"{label:>6} {before:>10} {peak:>10} {(peak - before) / 1024:>8.1f}Mi "
            f"{n / took / MB:>7.0f}"
        )

    print("\n3. 20 streams of 50 MB at once")
    sampler = Sampler(pid)
    sampler.start()
    results: list[tuple[float, int, str]] = []
    lock = threading.Lock()

    def one() -> None:
        r = curl(via_nazzil("f50.mp4"))
        with lock:
            results.append(r)

    started = time.perf_counter()
    threads = [threading.Thread(target=one) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - started
    peak = sampler.stop()
    ok = sum(1 for _, n, s in results if s == "200" and n == 50 * MB)
    failed = [(s, n) for _, n, s in results if s != "200" or n != 50 * MB]
    if failed:
        print(f"failed (status, bytes): {failed}")
    total = sum(n for _, n, _ in results)
    print(
        f"complete: {ok}/20, wall {wall:.1f} s, aggregate {total / wall / MB:.0f} MB/s, "
        f"slowest {max(r[0] for r in results):.1f} s, peak RSS growth "
        f"{(peak - base) / 1024:.1f} MiB"
    )


if __name__ == "__main__":
    main()
