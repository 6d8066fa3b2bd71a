"""Preview speed: a warm `nazzil serve` vs `yt-dlp -J` as a process, and a cached repeat.

Run: .venv/bin/python bench/preview.py [runs]
Targets: a warm preview at least 10x faster than `yt-dlp -J`; a cached repeat under 20 ms.
Everything is local: test media made by ffmpeg, served from 127.0.0.1 by tests/mediaserver.py.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.media import build_media  # noqa: E402
from tests.mediaserver import MediaServer, og_page, video_page  # noqa: E402
from tests.serve import NazzilServer  # noqa: E402


def yt_dlp_command() -> list[str]:
    script = Path(sys.executable).with_name("yt-dlp")
    if script.exists():
        return [str(script)]
    return [shutil.which("yt-dlp") or "yt-dlp"]


def preview(base: str, url: str) -> tuple[float, dict]:
    """POST /api/v1/info over HTTP; return the seconds it took and the MediaInfo."""
    request = urllib.request.Request(
        base + "/api/v1/info",
        data=json.dumps({"url": url}).encode(),
        headers={"Content-Type": "application/json"},
    )
    started = time.perf_counter()
    with urllib.request.urlopen(request, timeout=60) as resp:
        body = json.load(resp)
    return time.perf_counter() - started, body


def yt_dlp_json(url: str) -> tuple[float, dict]:
    """Run `yt-dlp -J` on url as a fresh process (no config, no cache); return time and JSON."""
    started = time.perf_counter()
    proc = subprocess.run(
        [*yt_dlp_command(), "-J", "--no-config", "--no-cache-dir", "--no-plugin-dirs", url],
        capture_output=True,
        text=True,
        env={**os.environ, "YTDLP_NO_PLUGINS": "1"},
    )
    elapsed = time.perf_counter() - started
    if proc.returncode != 0:
        # Older yt-dlp lack --no-plugin-dirs; YTDLP_NO_PLUGINS already covers plugins.
        started = time.perf_counter()
        proc = subprocess.run(
            [*yt_dlp_command(), "-J", "--no-config", "--no-cache-dir", url],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "YTDLP_NO_PLUGINS": "1"},
        )
        elapsed = time.perf_counter() - started
    return elapsed, json.loads(proc.stdout)


def ms(values: list[float]) -> float:
    return statistics.median(values) * 1000


def main() -> None:
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 10
    root = Path(tempfile.mkdtemp(prefix="nazzil-bench-media-"))
    build_media(root)
    with MediaServer(root) as media:
        pages = {
            "<video> page": media.add_page(
                "/bench/video.html", video_page("/sample.mp4", "Bench video", poster="/thumb.jpg")
            ),
            "og:video page": media.add_page(
                "/bench/og.html", og_page(media.url("/sample.mp4"), "Bench OG", image="/thumb.jpg")
            ),
            "HLS master": media.url("/hls/master.m3u8"),
        }
        env = {
            "NAZZIL_TRUSTED_HOSTS": f"127.0.0.1:{media.port}",
            "NAZZIL_SECRET_KEY": "bench",
            "NAZZIL_LOG_LEVEL": "WARNING",
            # The rate limit guards a public server; a benchmark is one busy client.
            "NAZZIL_RATE_LIMIT_PREVIEW": "100000/minute",
        }
        with NazzilServer(root, env) as server:
            base = server.base
            # Warm the server: the first preview imports yt-dlp and lists its extractors.
            first, _ = preview(base, media.url("/sample.mp4?warmup"))
            print(f"first preview in a fresh server (imports yt-dlp): {first * 1000:.0f} ms\n")
            print(f"preview, {runs} runs each (medians, ms)")
            header = f"{'':16}{'nazzil warm':>13}{'yt-dlp -J':>11}{'faster':>9}{'cached':>9}"
            print(header)
            worst_ratio, worst_cached = float("inf"), 0.0
            for name, url in pages.items():
                sep = "&" if "?" in url else "?"
                # A fresh query string each time: the cache must not answer these.
                warm = [preview(base, f"{url}{sep}run={i}")[0] for i in range(runs)]
                cold = [yt_dlp_json(url)[0] for _ in range(max(3, runs // 2))]
                preview(base, url)  # fill the cache
                cached = [preview(base, url)[0] for _ in range(runs)]
                ratio = ms(cold) / ms(warm)
                worst_ratio = min(worst_ratio, ratio)
                worst_cached = max(worst_cached, ms(cached))
                print(f"{name:16}{ms(warm):13.1f}{ms(cold):11.0f}{ratio:8.1f}x{ms(cached):9.1f}")
            same_url = pages["<video> page"]
            ours = preview(base, same_url)[1]
            theirs = yt_dlp_json(same_url)[1]
            print(
                f"\nsame answer: title {ours['title']!r} vs {theirs.get('title')!r}, "
                f"duration {ours['duration']} vs {theirs.get('duration')}"
            )
            ok_speed = "OK" if worst_ratio >= 10 else "UNDER"
            ok_cache = "OK" if worst_cached < 20 else "OVER"
            print(f"target >= 10x faster than yt-dlp -J: {ok_speed} (worst {worst_ratio:.1f}x)")
            print(f"target cached repeat < 20 ms: {ok_cache} (worst {worst_cached:.1f} ms)")
    shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
