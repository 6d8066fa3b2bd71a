"""A Vercel cold start never fails: importing nazzil does no I/O and writes nothing, anywhere."""

from __future__ import annotations

import json
import os
import pkgutil
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

import nazzil

ROOT = Path(__file__).resolve().parent.parent

# Runs in a fresh interpreter. An audit hook records every write, directory change, socket,
# thread and process from the first import of nazzil on; the result is printed as JSON.
AUDIT = r"""
import json, os, sys

WRITE = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
CHANGES = {"os.mkdir", "os.rename", "os.replace", "os.remove", "os.rmdir", "os.symlink",
           "os.link", "os.truncate", "os.chmod", "os.chown", "os.utime", "shutil.rmtree",
           "shutil.copyfile", "shutil.move", "tempfile.mkstemp", "tempfile.mkdtemp"}
NETWORK = {"socket.connect", "socket.bind", "socket.getaddrinfo", "socket.gethostbyname",
           "socket.sendto", "http.client.connect"}
PROCESSES = {"_thread.start_new_thread", "subprocess.Popen", "os.system", "os.fork",
             "os.posix_spawn", "os.exec"}
CODE = (".py", ".pyc", ".so", ".pth", ".pyi")
events = []
reads = []


def hook(event, args):
    if event == "open":
        path, _mode, flags = args
        if isinstance(flags, int) and flags & WRITE:
            events.append(["open-for-writing", str(path)])
        elif isinstance(path, (str, bytes)) and not str(path).endswith(CODE):
            reads.append(str(path))
    elif event in CHANGES:
        events.append([event, str(args[0]) if args else ""])
    elif event in NETWORK or event in PROCESSES:
        events.append([event, repr(args)[:200]])


sys.addaudithook(hook)
"""

VERCEL_PROBE = (
    AUDIT
    + r"""
import importlib
sys.path.insert(0, os.getcwd())  # Vercel imports the entry point from the project root
entry = importlib.import_module("api.index")
import nazzil
imported = [events.copy(), reads.copy()]
client = entry.app.test_client()
answers = {path: client.get(path).status_code for path in ("/", "/healthz")}
print(json.dumps({
    "import_events": imported[0],
    "import_reads": imported[1],
    "events": events,
    "answers": answers,
    "nazzil_file": nazzil.__file__,
    "mode": entry.app.config["NAZZIL_MODE"],
    "yt_dlp": "yt_dlp" in sys.modules,
    "heavy": sorted({m.split(".")[0] for m in sys.modules} & {
        "yt_dlp", "sqlalchemy", "alembic", "huey", "redis", "psycopg", "boto3", "botocore",
        "imageio_ffmpeg", "waitress", "gunicorn"}),
}))
"""
)


def _snapshot(*roots: Path) -> dict[str, tuple[int, int, int]]:
    """Every file and directory under roots with its mode, size and mtime."""
    seen: dict[str, tuple[int, int, int]] = {}
    for root in roots:
        for dirpath, dirnames, filenames in os.walk(root):
            for name in [*dirnames, *filenames, ""]:
                path = os.path.join(dirpath, name)
                st = os.lstat(path)
                seen[path] = (st.st_mode, st.st_size, st.st_mtime_ns)
    return seen


def _set_writable(root: Path, writable: bool) -> None:
    for dirpath, _dirnames, filenames in os.walk(root, topdown=False):
        for name in filenames:
            path = os.path.join(dirpath, name)
            os.chmod(path, 0o644 if writable else 0o444)
        os.chmod(dirpath, 0o755 if writable else 0o555)


@pytest.fixture
def read_only_tree() -> Iterator[dict[str, Path]]:
    """A copy of src/ and api/, plus a HOME and a TMPDIR, all read-only for everyone."""
    # Outside pytest's 0700 tmp dir, so an unprivileged user can reach it too.
    base = Path(tempfile.mkdtemp(prefix="nazzil-readonly-"))
    os.chmod(base, 0o755)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    dirs = {"tree": base / "tree", "home": base / "home", "tmp": base / "tmp"}
    shutil.copytree(ROOT / "src", dirs["tree"] / "src", ignore=ignore)
    shutil.copytree(ROOT / "api", dirs["tree"] / "api", ignore=ignore)
    for name in ("home", "tmp"):
        dirs[name].mkdir()
    for path in dirs.values():
        _set_writable(path, False)
    try:
        yield dirs
    finally:
        for path in dirs.values():
            _set_writable(path, True)
        shutil.rmtree(base, ignore_errors=True)


def _vercel_env(dirs: dict[str, Path]) -> dict[str, str]:
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "LANG": "C.UTF-8",
        "VERCEL": "1",
        "HOME": str(dirs["home"]),
        "TMPDIR": str(dirs["tmp"]),
        # Bytecode caching is Python's, not nazzil's (Vercel precompiles it at build time).
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONUNBUFFERED": "1",
    }
    return env


def _run_probe(dirs: dict[str, Path], prefix: list[str]) -> dict:
    before = _snapshot(*dirs.values())
    proc = subprocess.run(
        [*prefix, sys.executable, "-c", VERCEL_PROBE],
        cwd=dirs["tree"],
        env=_vercel_env(dirs),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert _snapshot(*dirs.values()) == before, "something was written in the watched dirs"
    assert "Traceback" not in proc.stderr, proc.stderr[-4000:]
    return result


def _check(result: dict, dirs: dict[str, Path]) -> None:
    assert result["answers"] == {"/": 200, "/healthz": 200}
    assert result["nazzil_file"].startswith(str(dirs["tree"] / "src")), "imported from the copy"
    assert result["mode"] == "serverless"
    assert result["import_events"] == [], "importing api/index.py did I/O"
    assert result["events"] == [], "serving / and /healthz wrote, connected or started threads"
    assert not result["yt_dlp"], "yt_dlp is imported only by the first preview"


def test_vercel_cold_start_on_a_read_only_tree(read_only_tree: dict[str, Path]) -> None:
    result = _run_probe(read_only_tree, [])
    _check(result, read_only_tree)
    # Importing reads code only: no data, template or config file is opened at import.
    assert result["import_reads"] == [] or all(
        not p.startswith(str(read_only_tree["tree"])) for p in result["import_reads"]
    ), result["import_reads"]


def _unprivileged_prefix() -> list[str] | None:
    """A command prefix that drops root, or None when not root or no tool can."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv:
        return [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", "--"]
    runuser = shutil.which("runuser")
    if runuser:
        return [runuser, "-u", "nobody", "--"]
    return None


def test_vercel_cold_start_as_an_unprivileged_user(read_only_tree: dict[str, Path]) -> None:
    """Root ignores permission bits; 'nobody' really cannot write there."""
    prefix = _unprivileged_prefix()
    if prefix is None:
        pytest.skip("running as root without setpriv/runuser: the snapshot test covers writes")
    probe = subprocess.run(
        [*prefix, sys.executable, "-c", "print(1)"], capture_output=True, text=True, timeout=30
    )
    if probe.returncode != 0:
        pytest.skip(f"cannot run Python as an unprivileged user here: {probe.stderr[-300:]}")
    _check(_run_probe(read_only_tree, prefix), read_only_tree)


def _nazzil_modules() -> list[str]:
    names = ["nazzil"]
    names += [m.name for m in pkgutil.walk_packages(nazzil.__path__, "nazzil.")]
    return sorted(names)


def test_importing_any_module_does_no_io() -> None:
    """Every nazzil module imports without writing, connecting, or starting a thread."""
    script = (
        AUDIT
        + f"""
import importlib
for name in {_nazzil_modules()!r}:
    importlib.import_module(name)
print(json.dumps({{"events": events, "reads": reads,
                   "yt_dlp": "yt_dlp" in sys.modules}}))
"""
    )
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    env = {k: v for k, v in env.items() if not k.startswith("NAZZIL_")}
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, env=env
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["events"] == []
    nazzil_reads = [p for p in result["reads"] if str(ROOT / "src") in p]
    assert nazzil_reads == [], "a nazzil module reads a data file at import"
    assert not result["yt_dlp"], "only extract.yt_dlp_module() imports yt_dlp, on first use"


def test_only_extract_imports_yt_dlp() -> None:
    """extract.py is the one module that may import yt_dlp (and only inside a function)."""
    offenders = []
    for path in sorted((ROOT / "src" / "nazzil").rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        if ("import yt_dlp" in text or "from yt_dlp" in text) and path.name != "extract.py":
            offenders.append(str(path.relative_to(ROOT)))
    assert offenders == []


def test_api_entry_point_exports_app() -> None:
    source = (ROOT / "api" / "index.py").read_text(encoding="utf-8")
    assert "from nazzil.app import create_app" in source
    assert "app = create_app()" in source
    assert (ROOT / "api" / "__init__.py").exists()


def test_vercel_json_routes_everything_to_the_function() -> None:
    config = json.loads((ROOT / "vercel.json").read_text(encoding="utf-8"))
    function = config["functions"]["api/index.py"]
    assert isinstance(function["maxDuration"], int) and 10 <= function["maxDuration"] <= 300
    assert isinstance(function["memory"], int) and 128 <= function["memory"] <= 2048
    rewrites = config["rewrites"]
    assert {"source": "/(.*)", "destination": "/api/index"} in rewrites
    assert config["env"]["PYTHONUNBUFFERED"] == "1"
    assert "builds" not in config and "routes" not in config, "legacy keys conflict"
    # The build copies the static files to where Vercel's CDN serves them.
    assert "src/nazzil/static" in config["buildCommand"]
    assert config["outputDirectory"] == "public"
    requirements = (ROOT / "requirements.txt").read_text(encoding="utf-8").split()
    assert "." in requirements, "requirements.txt installs nazzil itself"
    assert stat.S_ISREG((ROOT / "api" / "index.py").stat().st_mode)
