"""Shared fixtures: media made by ffmpeg, served from 127.0.0.1; the app and its client."""

from __future__ import annotations

import io
import ipaddress
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.media import build_media
from tests.mediaserver import MediaServer

# yt-dlp must never load plugins from a developer's disk during tests.
os.environ["YTDLP_NO_PLUGINS"] = "1"

_real_getaddrinfo = socket.getaddrinfo
FAKE_HOSTS: dict[str, str] = {}  # name -> address, for tests that need a "public" name


def _local_only_getaddrinfo(host, port, *args, **kwargs):  # noqa: ANN001, ANN202
    """Resolve only loopback names and stubbed ones: tests never ask a real DNS server."""
    name = host.decode() if isinstance(host, bytes) else host
    if name in FAKE_HOSTS:
        return _real_getaddrinfo(FAKE_HOSTS[name], port, *args, **kwargs)
    if name is None or name in ("localhost", "localhost.", "ip6-localhost"):
        return _real_getaddrinfo(name, port, *args, **kwargs)
    try:
        ipaddress.ip_address(name.strip("[]").split("%")[0])
    except ValueError:
        # Numeric spellings such as 2130706433 or 0x7f.1 resolve without DNS.
        try:
            socket.inet_aton(name)
        except OSError:
            msg = f"tests resolve no outside name: {name}"
            raise socket.gaierror(socket.EAI_NONAME, msg) from None
    return _real_getaddrinfo(name, port, *args, **kwargs)


socket.getaddrinfo = _local_only_getaddrinfo


@pytest.fixture(scope="session")
def media_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Build the test media once per session."""
    root = tmp_path_factory.mktemp("media")
    build_media(root)
    return root


@pytest.fixture(scope="session")
def media_server(media_root: Path) -> Iterator[MediaServer]:
    """Serve the test media and pages from 127.0.0.1 (trusted by the app fixture)."""
    with MediaServer(media_root) as server:
        yield server


@pytest.fixture(scope="session")
def canary(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MediaServer]:
    """A server on 127.0.0.1 that nazzil must never reach (it is not trusted)."""
    with MediaServer(tmp_path_factory.mktemp("canary")) as server:
        yield server


@pytest.fixture
def config(tmp_path: Path, media_server: MediaServer) -> dict:
    """Settings for a test app: a fresh data dir, the media server trusted, short timeouts."""
    return {
        "DATA_DIR": str(tmp_path / "data"),
        "SECRET_KEY": "test-secret-key",
        "TRUSTED_HOSTS": f"127.0.0.1:{media_server.port}",
        "FETCH_TIMEOUT": "2",
        "LOG_LEVEL": "DEBUG",
        # Counters per test app, even when a test points REDIS_URL at a shared Redis.
        "RATE_LIMIT_STORAGE": "memory://",
    }


@pytest.fixture
def app(config: dict):  # noqa: ANN201
    """A nazzil app for one test."""
    from nazzil.app import create_app

    return create_app(config)


@pytest.fixture
def client(app):  # noqa: ANN001, ANN201
    """A test client of the app."""
    return app.test_client()


@pytest.fixture
def runner(app):  # noqa: ANN001, ANN201
    """A CLI runner of the app."""
    return app.test_cli_runner()


@pytest.fixture
def nazzil_log(app) -> Iterator[io.StringIO]:  # noqa: ANN001
    """Capture what nazzil's own log handler writes, in its real format (with request ids)."""
    import logging

    handler = next(h for h in logging.getLogger("nazzil").handlers if getattr(h, "_nazzil", 0))
    buffer = io.StringIO()
    old = handler.setStream(buffer)
    try:
        yield buffer
    finally:
        handler.setStream(old)
