"""A real `nazzil serve` subprocess on a free 127.0.0.1 port, for tests and benchmarks."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any


def free_port() -> int:
    """Ask the kernel for a free TCP port on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _children(pid: int) -> list[int]:
    """Process ids whose parent is pid (Linux /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


class NazzilServer:
    """`nazzil serve` as a subprocess logging to work/serve.log, plus a cookie-keeping client."""

    def __init__(
        self,
        work: Path,
        env: Mapping[str, str | None] | None = None,
        *,
        clean_env: bool = False,
        port: int | None = None,
        command: Sequence[str] | None = None,
        args: Sequence[str] | None = None,
        ready: str = "/healthz",
        timeout: float = 30.0,
    ) -> None:
        """Prepare (not start) a server; env values of None unset inherited variables."""
        # clean_env drops inherited NAZZIL_*; command replaces `python -m nazzil.cli`; args
        # replaces `--host 127.0.0.1 --port N` after `serve`; ready is polled until it answers 200.
        self.work = work
        self.port = port or free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = work / "serve.log"
        self.cookie = ""
        self.proc: subprocess.Popen[bytes] | None = None
        self.ready, self.timeout = ready, timeout
        inherited = {
            k: v for k, v in os.environ.items() if not (clean_env and k.startswith("NAZZIL_"))
        }
        merged: dict[str, str | None] = {
            **inherited,
            "NAZZIL_DATA_DIR": str(work / "data"),
            "NAZZIL_SECRET_KEY": "nazzil-serve-test-secret-key-32b",
            "YTDLP_NO_PLUGINS": "1",
            "PYTHONUNBUFFERED": "1",
            **(env or {}),
        }
        self.env = {k: v for k, v in merged.items() if v is not None}
        self.argv = [
            *(command or [sys.executable, "-m", "nazzil.cli"]),
            "serve",
            *(args if args is not None else ["--host", "127.0.0.1", "--port", str(self.port)]),
        ]

    def start(self) -> NazzilServer:
        """Start the process (appending to the log) and wait until `ready` answers 200."""
        self.work.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as out:
            # A session of its own, so kill() takes gunicorn's worker down with its arbiter.
            self.proc = subprocess.Popen(
                self.argv,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"nazzil serve exited:\n{self.log_text()}")
            try:
                if self.call("GET", self.ready, timeout=2)[0] == 200:
                    return self
            except OSError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"nazzil serve did not answer {self.ready}:\n{self.log_text()}")

    def kill(self) -> None:
        """SIGKILL every process of the server, as a crash would, and reap the first."""
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        """Terminate the process; kill it if it has not exited within 10 s."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)  # nothing of it may outlive a test

    @property
    def pid(self) -> int:
        """The id of the process that answers requests (gunicorn's worker), for /proc/<pid>."""
        assert self.proc is not None, "the server is not started"
        workers = [
            pid
            for pid in _children(self.proc.pid)
            if Path(f"/proc/{pid}/exe").resolve() == Path(f"/proc/{self.proc.pid}/exe").resolve()
        ]
        return workers[0] if len(workers) == 1 else self.proc.pid

    def url(self, path: str = "/") -> str:
        """The absolute URL of a path on this server."""
        return self.base + path

    def log_text(self) -> str:
        """Everything the process wrote to stdout and stderr so far."""
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def call(
        self, method: str, path: str, body: Any = None, timeout: float = 30
    ) -> tuple[int, Any]:
        """Send JSON, keep the device cookie; return the status and decoded JSON (else bytes)."""
        request = urllib.request.Request(
            self.url(path),
            data=json.dumps(body).encode() if body is not None else None,
            method=method,
            headers={"Content-Type": "application/json", "Cookie": self.cookie},
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
                status, raw, headers = response.status, response.read(), response.headers
        except urllib.error.HTTPError as exc:
            status, raw, headers = exc.code, exc.read(), exc.headers
        cookie = headers.get("Set-Cookie")
        if cookie:
            self.cookie = cookie.split(";", 1)[0]
        if headers.get("Content-Type", "").startswith("application/json"):
            return status, json.loads(raw)
        return status, raw

    def __enter__(self) -> NazzilServer:
        if self.proc is None or self.proc.poll() is not None:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
