"""Cold start: a fresh process importing api/index.py and answering "/" vs a bare Flask app.

Run: .venv/bin/python bench/cold_start.py [runs]   (target: nazzil <= 1.5x the bare app)
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Each child reports the time from its first line to the answer, and what got imported.
NAZZIL = """
import time
started = time.perf_counter()
import json, os, sys
sys.path.insert(0, os.getcwd())
import api.index
imported = time.perf_counter() - started
response = api.index.app.test_client().get("/")
elapsed = time.perf_counter() - started
heavy = sorted({m.split(".")[0] for m in sys.modules} & {
    "yt_dlp", "sqlalchemy", "alembic", "huey", "redis", "psycopg", "boto3", "botocore",
    "imageio_ffmpeg", "waitress", "gunicorn", "limits", "flask_limiter", "babel", "flask_babel"})
print(json.dumps({"status": response.status_code, "seconds": elapsed, "import": imported,
                  "yt_dlp": "yt_dlp" in sys.modules, "heavy": heavy,
                  "modules": len(sys.modules)}))
"""

BARE = """
import time
started = time.perf_counter()
import json, sys
from flask import Flask

app = Flask(__name__)


@app.get("/")
def hello():
    return "hello"


imported = time.perf_counter() - started
response = app.test_client().get("/")
elapsed = time.perf_counter() - started
print(json.dumps({"status": response.status_code, "seconds": elapsed, "import": imported,
                  "yt_dlp": False,
                  "heavy": [], "modules": len(sys.modules)}))
"""


def run(code: str, env: dict[str, str], cwd: Path) -> tuple[float, dict]:
    """Run one fresh interpreter; return its wall time (spawn to exit) and its report."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True, check=True
    )
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["status"] == 200, proc.stderr
    # CPU time of the whole process: less sensitive than wall time to a busy machine.
    report["cpu"] = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, report


def main() -> None:
    scratch = tempfile.mkdtemp(prefix="nazzil-bench-cold-")
    try:
        measure(scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def measure(scratch: str) -> None:
    """Time the two apps side by side and print the table."""
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 15
    home = os.path.join(scratch, "home")
    os.mkdir(home)
    env = {k: v for k, v in os.environ.items() if not k.startswith("NAZZIL_")}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    # Vercel compiles bytecode at build time, so a cold start there never compiles: keep
    # .pyc files (in a private prefix, not in the source tree) like a deployment does.
    pycache = os.path.join(scratch, "pycache")
    env.update(VERCEL="1", HOME=home, NAZZIL_LOG_LEVEL="WARNING", PYTHONPYCACHEPREFIX=pycache)
    # One untimed run of each warms the OS file cache and writes those .pyc files.
    run(NAZZIL, env, ROOT)
    run(BARE, env, ROOT)
    results: dict[str, list[tuple[float, dict]]] = {"nazzil": [], "bare": []}
    for _ in range(runs):  # interleaved, so background load hits both alike
        results["nazzil"].append(run(NAZZIL, env, ROOT))
        results["bare"].append(run(BARE, env, ROOT))

    def med(name: str, what: str) -> float:
        pick = {
            "wall": lambda r: r[0],
            "total": lambda r: r[1]["seconds"],
            "import": lambda r: r[1]["import"],
            "answer": lambda r: r[1]["seconds"] - r[1]["import"],
            "cpu": lambda r: r[1]["cpu"],
        }[what]
        return statistics.median(pick(r) for r in results[name]) * 1000

    print(f"cold start, {runs} fresh processes each (medians, ms)")
    print(f"{'':28}{'nazzil':>10}{'bare Flask':>12}{'ratio':>8}")
    rows = (
        ("process wall time", "wall"),
        ("process CPU time", "cpu"),
        ("import + answer '/'", "total"),
        ("  import", "import"),
        ("  first answer '/'", "answer"),
    )
    for label, what in rows:
        n, b = med("nazzil", what), med("bare", what)
        print(f"{label:28}{n:10.0f}{b:12.0f}{n / b:7.2f}x")
    last = results["nazzil"][-1][1]
    ratio = med("nazzil", "wall") / med("bare", "wall")
    print(f"{'modules loaded':28}{last['modules']:10d}{results['bare'][-1][1]['modules']:12d}")
    cpu_ratio = med("nazzil", "cpu") / med("bare", "cpu")
    verdict = "OK" if ratio <= 1.5 else "OVER"
    print(f"target <= 1.50x (process wall time): {verdict} ({ratio:.2f}x; CPU {cpu_ratio:.2f}x)")
    imported = any(r[1]["yt_dlp"] for r in results["nazzil"])
    print(f"yt_dlp imported before the first preview: {'YES (bad)' if imported else 'no (good)'}")
    print(f"heavy packages loaded for '/': {', '.join(last['heavy']) or 'none'}")
    if "--breakdown" in sys.argv:
        breakdown(env)


# Modules whose import cost is worth watching (cumulative, as -X importtime reports it).
WATCH = ("flask", "jinja2", "werkzeug", "itsdangerous", "click", "flask_limiter", "limits",
         "flask_babel", "babel", "sqlalchemy", "huey", "redis", "http.client", "ssl", "email",
         "nazzil.app", "nazzil.security", "nazzil.i18n", "nazzil.extract", "nazzil.netguard",
         "nazzil.stream", "nazzil.web.stream", "nazzil.web.api", "nazzil.web.pages",
         "nazzil.jobs", "nazzil.db")  # fmt: skip


def breakdown(env: dict[str, str]) -> None:
    """Print what importing api/index.py spends its time on (python -X importtime)."""
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", NAZZIL], cwd=ROOT, env=env,
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    cumulative: dict[str, int] = {}
    for line in proc.stderr.splitlines():
        parts = line.split("|")
        if len(parts) == 3 and parts[1].strip().isdigit():
            cumulative[parts[2].strip()] = int(parts[1])
    print("\nimport cost of api/index.py by module (cumulative, ms; nested ones overlap)")
    for name in sorted(WATCH, key=lambda n: -cumulative.get(n, 0)):
        if name in cumulative:
            print(f"  {name:24}{cumulative[name] / 1000:8.1f}")


if __name__ == "__main__":
    main()
