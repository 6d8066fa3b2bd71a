"""The production HTTP server of `nazzil serve`: gunicorn (threads) on POSIX, else waitress."""

from __future__ import annotations

import contextlib
import io
import logging
import select
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from flask import Flask

log = logging.getLogger(__name__)

# A response whose client takes no data for this long is cut (and its thread freed).
SEND_TIMEOUT = 300.0
SERVERS = ("auto", "gunicorn", "waitress")


def choose(setting: str) -> str:
    """The server NAZZIL_SERVER names; 'auto' is gunicorn where it runs (not on Windows)."""
    name = (setting or "auto").strip().lower()
    if name not in SERVERS:
        raise ValueError(f"NAZZIL_SERVER must be one of {', '.join(SERVERS)}, not {setting!r}")
    if name == "auto":
        return "waitress" if sys.platform == "win32" else "gunicorn"
    return name


def run(app: Flask, host: str, port: int, on_start: list[Callable[[Flask], Any]]) -> None:
    """Serve app until stopped; on_start runs in the process that answers requests."""
    name = choose(app.config["NAZZIL_SERVER"])
    log.debug("server: %s", name)
    if name == "gunicorn":
        _run_gunicorn(app, host, port, on_start)
    else:
        _run_waitress(app, host, port, on_start)


# Set when the server starts a graceful stop: long responses (job events, conversions
# waiting for ffmpeg) end as if their client had gone, so the stop does not wait for them.
_stopping = threading.Event()


def client_gone(environ: dict[str, Any]) -> Callable[[], bool] | None:
    """A callable that tells whether the client has hung up, where the server lets us ask."""
    hung_up = environ.get("waitress.client_disconnected")  # channel_request_lookahead > 0
    if not callable(hung_up):
        sock = environ.get("gunicorn.socket")
        if not isinstance(sock, socket.socket):
            return None
        hung_up = _hung_up(sock)
    return lambda: _stopping.is_set() or hung_up()


def _stop(app: Flask) -> None:
    """Begin a stop: end long responses and run the app's on_stop hooks (jobs handed back)."""
    _stopping.set()
    for stop in app.extensions["nazzil"].get("on_stop", []):
        try:
            stop()
        except Exception:  # noqa: BLE001 - every hook gets its turn
            log.warning("a stop hook failed", exc_info=True)


def _hung_up(sock: socket.socket) -> Callable[[], bool]:
    def gone() -> bool:
        # Readable with nothing to read is an orderly close; a pipelined request is not.
        # (gunicorn runs on POSIX only, where poll() exists.)
        try:
            poller = select.poll()
            poller.register(sock, select.POLLIN)
            events = poller.poll(0)
            if not events:
                return False
            if events[0][1] & (select.POLLHUP | select.POLLERR | select.POLLNVAL):
                return True
            return not sock.recv(1, socket.MSG_PEEK)
        except BlockingIOError:
            return False
        except (OSError, ValueError):
            return True

    return gone


# ------------------------------------------------------------------ gunicorn


def _run_gunicorn(app: Flask, host: str, port: int, on_start: list[Callable[[Flask], Any]]) -> None:
    from gunicorn.app.base import BaseApplication

    config = app.config
    deadlines = _ReadDeadlines(float(config["NAZZIL_READ_TIMEOUT"]))
    settings: dict[str, Any] = {
        "bind": [f"[{host}]:{port}" if ":" in host else f"{host}:{port}"],
        # One process with threads: streams and jobs share its memory, and the embedded job
        # workers run in it (started after the fork, as threads do not survive one).
        "workers": 1,
        "worker_class": _worker_class(app, deadlines),  # gthread, with read deadlines
        "threads": int(config["NAZZIL_THREADS"]),
        "worker_connections": max(1000, int(config["NAZZIL_THREADS"]) * 4),
        "timeout": 120,
        # Platforms send SIGKILL some 10 to 30 s after SIGTERM: leave time for the jobs'
        # hand-back (queue.start_embedded) within the shortest of them.
        "graceful_timeout": 8,
        "keepalive": 5,
        # /api/v1/info?url=... carries a percent-encoded URL of up to NAZZIL_MAX_URL_LENGTH.
        "limit_request_line": 0,
        "limit_request_field_size": 16384,
        # Forwarded headers are nazzil's to judge (NAZZIL_PROXY_HOPS), not the server's.
        "forwarded_allow_ips": "",
        "proc_name": "nazzil",
        "accesslog": None,
        "errorlog": "-",
        "loglevel": "warning",
        "sendfile": False,
        "control_socket_disable": True,  # else gunicorn opens a socket under $HOME
        "post_worker_init": lambda worker: [start(app) for start in on_start],
        # SIGINT/SIGQUIT: gunicorn's worker exits at once, so hand the jobs back right here.
        "worker_int": lambda worker: _stop(app),
    }

    class Server(BaseApplication):  # type: ignore[misc]
        def load_config(self) -> None:
            known = self.cfg.settings
            for key, value in settings.items():
                if key in known:  # settings differ between gunicorn releases
                    self.cfg.set(key, value)

        def load(self) -> Any:
            return _GunicornApp(app, deadlines, int(config["NAZZIL_MAX_BODY"] or 0))

    Server().run()


class _GunicornApp:
    """The app, given whole requests within their deadline; responses get a send timeout."""

    def __init__(
        self, app: Any, deadlines: _ReadDeadlines | None = None, max_body: int = 0
    ) -> None:
        self.app, self.deadlines, self.max_body = app, deadlines, max_body

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        sock = environ.get("gunicorn.socket")
        if isinstance(sock, socket.socket):
            if self.deadlines is not None:
                # The body too is read under the deadline (waitress, too, reads it before
                # the app runs): a request's body trickled in would otherwise hold a thread.
                _read_body(environ, self.max_body)
                self.deadlines.done(sock)
            # A client that stops reading would otherwise hold a thread (and an upstream
            # connection, or an ffmpeg) for ever in sendall().
            with contextlib.suppress(OSError):
                sock.settimeout(SEND_TIMEOUT)
        return self.app(environ, start_response)


def _read_body(environ: dict[str, Any], max_body: int) -> None:
    """Read a request's body (at most max_body + 1 bytes) into memory, now."""
    length = str(environ.get("CONTENT_LENGTH") or "")
    chunked = "chunked" in str(environ.get("HTTP_TRANSFER_ENCODING") or "").lower()
    if length.isdigit() and int(length) > 0:
        size = int(length)
        if max_body and size > max_body:
            return  # refused by the app (413) without being read
    elif chunked:
        size = max_body + 1 if max_body else -1  # past the limit, the app answers 413
    else:
        return
    data = environ["wsgi.input"].read(size)
    environ["wsgi.input"] = io.BytesIO(data)
    if chunked:  # as waitress does: the app sees a plain body of known length
        environ["CONTENT_LENGTH"] = str(len(data))
        environ.pop("HTTP_TRANSFER_ENCODING", None)


class _ReadDeadlines:
    """Cut connections whose requests take too long to arrive (slowloris).

    gunicorn's threaded worker reads a request's headers in a pool thread, blocking, with no
    time limit: a few clients sending a byte now and then would hold every thread. Each
    handling is given a deadline; the app clears it once the request is in, and a watchdog
    shuts down the sockets still reading past theirs.
    """

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._due: dict[socket.socket, float] = {}
        self._lock = threading.Lock()
        self._watchdog: threading.Thread | None = None

    def start(self, sock: socket.socket) -> None:
        """Give sock's next request `seconds` to arrive."""
        if self.seconds <= 0:
            return
        with self._lock:
            self._due[sock] = time.monotonic() + self.seconds
            if self._watchdog is None:  # started in the worker, after gunicorn's fork
                self._watchdog = threading.Thread(
                    target=self._watch, name="nazzil-read-deadlines", daemon=True
                )
                self._watchdog.start()

    def done(self, sock: socket.socket) -> None:
        """The request is in (or the connection is no longer being read)."""
        with self._lock:
            self._due.pop(sock, None)

    def _watch(self) -> None:
        while True:
            time.sleep(min(1.0, self.seconds / 4))
            now = time.monotonic()
            with self._lock:
                late = [sock for sock, due in self._due.items() if due < now]
                for sock in late:
                    del self._due[sock]
            for sock in late:
                log.info("closing a connection whose request took over %gs to arrive", self.seconds)
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)  # wakes the blocked read: no more data


def _worker_class(app: Flask, deadlines: _ReadDeadlines) -> type:
    from gunicorn.workers.gthread import ThreadWorker

    class Worker(ThreadWorker):  # type: ignore[misc]
        """gunicorn's threaded worker, with a time limit on reading a request."""

        def handle_exit(self, sig: int, frame: Any) -> None:
            # SIGTERM: gunicorn stops accepting and waits for open responses; begin our stop
            # beside it (a thread: this is a signal handler in the worker's main loop).
            super().handle_exit(sig, frame)
            threading.Thread(target=_stop, args=(app,), name="nazzil-stop", daemon=True).start()

        def handle(self, conn: Any) -> Any:
            sock = conn.sock
            deadlines.start(sock)
            try:
                return super().handle(conn)
            finally:
                deadlines.done(sock)

    return Worker


# ------------------------------------------------------------------ waitress


def _run_waitress(app: Flask, host: str, port: int, on_start: list[Callable[[Flask], Any]]) -> None:
    import waitress

    for start in on_start:
        start(app)
    if threading.current_thread() is threading.main_thread() and hasattr(signal, "SIGTERM"):
        # Platforms stop with SIGTERM: begin our stop (jobs back to the queue, event streams
        # ended), then end waitress as Ctrl-C does.
        def _terminate(signum: int, frame: Any) -> None:
            threading.Thread(target=_stop, args=(app,), name="nazzil-stop", daemon=True).start()
            raise KeyboardInterrupt

        signal.signal(signal.SIGTERM, _terminate)
    server = waitress.create_server(
        app,
        host=host,
        port=port,
        threads=app.config["NAZZIL_THREADS"],
        ident="nazzil",
        # Keep streamed responses in memory and push back on the app instead of spooling to disk.
        # A write blocks while a connection holds more than the watermark, and buffers rotate
        # at it, so one buffer (watermark + one 256 KiB chunk) never reaches the overflow size
        # at which waitress would move it to a temporary file.
        outbuf_overflow=8 * 1024 * 1024,
        outbuf_high_watermark=1024 * 1024,
        # Keep reading the socket during a response, so a client that hangs up is noticed
        # (environ["waitress.client_disconnected"]) even while a stream waits for upstream.
        channel_request_lookahead=1,
        channel_timeout=int(SEND_TIMEOUT),
    )
    server.run()
