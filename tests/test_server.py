"""The production server glue: choosing gunicorn or waitress, and telling a hang-up."""

from __future__ import annotations

import socket
import sys
from typing import Any

import pytest

from nazzil import server


def test_choose() -> None:
    auto = "waitress" if sys.platform == "win32" else "gunicorn"
    assert server.choose("auto") == server.choose("") == auto
    assert server.choose(" Waitress ") == "waitress"
    assert server.choose("gunicorn") == "gunicorn"
    with pytest.raises(ValueError, match="NAZZIL_SERVER"):
        server.choose("uwsgi")


def test_serve_refuses_an_unknown_server(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    from click.testing import CliRunner

    from nazzil.cli import main

    env = {"NAZZIL_SERVER": "uwsgi", "NAZZIL_DATA_DIR": str(tmp_path)}
    result = CliRunner().invoke(main, ["serve", "--port", "1"], env=env)
    assert result.exit_code == 1
    assert "NAZZIL_SERVER must be one of auto, gunicorn, waitress" in result.output
    assert "Traceback" not in result.output


def test_client_gone_under_gunicorn_peeks_at_the_socket() -> None:
    ours, theirs = socket.socketpair()
    try:
        gone = server.client_gone({"gunicorn.socket": ours})
        assert gone is not None and gone() is False
        theirs.sendall(b"GET /next HTTP/1.1\r\n")  # a pipelined request is not a hang-up
        assert gone() is False
        assert ours.recv(100)  # the server would read it later; the peek left it there
        theirs.close()
        assert gone() is True
    finally:
        ours.close()


def test_client_gone_under_waitress_asks_waitress() -> None:
    said = [False]
    gone = server.client_gone({"waitress.client_disconnected": lambda: said[0]})
    assert gone is not None and gone() is False
    said[0] = True
    assert gone() is True
    assert server.client_gone({}) is None


def test_a_stopping_server_ends_long_responses() -> None:
    """Once a graceful stop begins, every long response is told its client has gone."""
    ours, theirs = socket.socketpair()
    gone = server.client_gone({"gunicorn.socket": ours})
    assert gone is not None and gone() is False
    try:
        server._stopping.set()
        assert gone() is True
    finally:
        server._stopping.clear()
        ours.close()
        theirs.close()


def test_gunicorn_requests_get_a_send_timeout() -> None:
    seen: dict[str, Any] = {}

    def app(environ: dict, start_response: Any) -> list[bytes]:
        seen["timeout"] = environ["gunicorn.socket"].gettimeout()
        return [b"ok"]

    ours, theirs = socket.socketpair()
    try:
        assert server._GunicornApp(app)({"gunicorn.socket": ours}, None) == [b"ok"]  # type: ignore[arg-type]
    finally:
        ours.close()
        theirs.close()
    assert seen["timeout"] == server.SEND_TIMEOUT


@pytest.mark.parametrize("server_name", ["gunicorn", "waitress"])
def test_clients_that_trickle_headers_cannot_take_every_thread(tmp_path, server_name) -> None:
    """Slowloris: more half-sent requests than threads; a normal request is still answered."""
    import time
    import urllib.request

    from tests.serve import NazzilServer

    env = {"NAZZIL_SERVER": server_name, "NAZZIL_THREADS": "2", "NAZZIL_READ_TIMEOUT": "1",
           "NAZZIL_WORKERS": "0"}  # fmt: skip
    with NazzilServer(tmp_path, env) as srv:
        slow = []
        for n in range(6):
            sock = socket.create_connection(("127.0.0.1", srv.port), timeout=30)
            if n % 2:  # headers, and never their end
                sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            else:  # a whole head, and a tenth of the body it announces
                sock.sendall(
                    b"POST /api/v1/info HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                    b'Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{"url":'
                )
            slow.append(sock)
        try:
            started = time.monotonic()
            with urllib.request.urlopen(srv.url("/healthz"), timeout=20) as resp:
                assert resp.status == 200
            took = time.monotonic() - started
            if server_name == "gunicorn":
                # Each half-sent request held a thread for at most its 1 s header deadline,
                # and is then closed by the server.
                assert all(sock.recv(100) == b"" for sock in slow[:2])
                assert "closing a connection whose request took over 1s" in srv.log_text()
        finally:
            for sock in slow:
                sock.close()
    assert took < 10, took


def test_request_bodies_arrive_whole_under_gunicorn(tmp_path) -> None:
    """Bodies read ahead for the app: Content-Length, chunked, and chunked over MAX_BODY."""
    import http.client
    import json

    from tests.serve import NazzilServer

    env = {"NAZZIL_SERVER": "gunicorn", "NAZZIL_WORKERS": "0", "NAZZIL_MAX_BODY": "1K"}
    with NazzilServer(tmp_path, env) as srv:
        body = json.dumps({"url": "ftp://not-fetched.invalid/x"}).encode()

        def post(data: bytes, chunked: bool) -> tuple[int, bytes]:
            conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=10)
            headers = {"Content-Type": "application/json"}
            payload: Any = iter([data[:5], data[5:]]) if chunked else data
            conn.request("POST", "/api/v1/info", payload, headers, encode_chunked=chunked)
            resp = conn.getresponse()
            answer = (resp.status, resp.read())
            conn.close()
            return answer

        for chunked in (False, True):
            status, answer = post(body, chunked)
            assert status == 400 and b'"invalid_url"' in answer, (chunked, answer)
        status, answer = post(b'{"url": "' + b"a" * 2000 + b'"}', True)
        assert status == 413 and b'"error"' in answer, answer

        # The longest URL nazzil takes, all non-ASCII, is ~24 KB in a request line: the app
        # answers it (with its JSON error), not the server with its own 400 page.
        from urllib.parse import quote

        long_url = "ftp://x.invalid/" + "é" * (4096 - 16)
        conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=10)
        conn.request("GET", "/api/v1/info?url=" + quote(long_url, safe=""))
        resp = conn.getresponse()
        assert resp.status == 400 and b'"invalid_url"' in resp.read()
        conn.close()
