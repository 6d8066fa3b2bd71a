"""The app factory and its lazy pieces: data dir, secret key, device cookie, logging, health."""

from __future__ import annotations

import logging
import re
import stat
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from itsdangerous import URLSafeSerializer
from tests.mediaserver import MediaServer, video_page

from nazzil import __version__, device
from nazzil.app import create_app

SECRET_WARNING = "NAZZIL_SECRET_KEY is not set"


def with_device_route(app: Flask) -> Flask:
    """Add a test-only route that needs the device id (as the jobs API will)."""
    app.add_url_rule("/test-device", "test_device", lambda: {"device": device.get_device_id()})
    return app


def device_cookie(response: Any) -> SimpleCookie | None:
    """The parsed nazzil_device Set-Cookie of a response, or None."""
    headers = [h for h in response.headers.getlist("Set-Cookie") if h.startswith("nazzil_device=")]
    assert len(headers) <= 1
    if not headers:
        return None
    cookie = SimpleCookie()
    cookie.load(headers[0])
    return cookie


@pytest.fixture
def unwritable_data_dir(tmp_path: Path) -> str:
    """A DATA_DIR that cannot be created even by root: its parent is a regular file."""
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("a file where a directory should be")
    return str(blocker / "data")


@pytest.fixture
def page_url(media_server: MediaServer) -> str:
    return media_server.add_page("/app/video.html", video_page("/sample.mp4", "Lazy app"))


# ----------------------------------------------------------------------------- factory


def test_create_app_does_no_io(tmp_path: Path) -> None:
    data = tmp_path / "data"
    app = create_app({"DATA_DIR": str(data)})
    client = app.test_client()
    assert client.get("/").status_code == 200
    assert client.get("/healthz").status_code == 200
    assert not data.exists(), "nothing needed the data directory yet"
    assert "data_dir" not in app.extensions["nazzil"]
    assert "secret_key" not in app.extensions["nazzil"]


def test_config_mapping_overrides_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NAZZIL_PLAYLIST_LIMIT", "7")
    monkeypatch.setenv("NAZZIL_FETCH_TIMEOUT", "9")
    app = create_app({"FETCH_TIMEOUT": "3s", "NAZZIL_MAX_BODY": "1K"})
    assert app.config["NAZZIL_PLAYLIST_LIMIT"] == 7
    assert app.config["NAZZIL_FETCH_TIMEOUT"] == 3.0
    assert app.config["MAX_CONTENT_LENGTH"] == 1024


def test_bad_environment_value_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NAZZIL_MAX_FILESIZE", "lots")
    with pytest.raises(ValueError, match="NAZZIL_MAX_FILESIZE.*not a size: 'lots'"):
        create_app()


def test_healthz(client) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.get_json() == {"status": "ok", "version": __version__}
    assert re.fullmatch(r"[0-9a-f]{16}", response.headers["X-Request-ID"])


def test_readyz(client) -> None:
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.get_json()["status"] == "ready"
    assert response.get_json()["mode"] in ("single", "serverless", "cluster")


def test_static_files_carry_a_request_id(client) -> None:
    response = client.get("/static/app.css")
    assert response.status_code == 200
    assert response.headers["X-Request-ID"]
    response.close()


def test_openapi_describes_every_api_route(app, client) -> None:
    spec = client.get("/api/v1/openapi.json").get_json()
    assert spec["openapi"].startswith("3.1")
    assert spec["info"]["version"] == __version__
    assert "Error" in spec["components"]["schemas"]
    assert {"/api/v1/info", "/healthz", "/readyz", "/api/v1/openapi.json"} <= set(spec["paths"])
    assert set(spec["paths"]["/api/v1/info"]) >= {"get", "post"}
    for rule in app.url_map.iter_rules():
        if not (rule.rule.startswith("/api/") or rule.rule in ("/healthz", "/readyz")):
            continue
        path = re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule.rule)
        assert path in spec["paths"], f"{rule.rule} is not described in openapi.py"
        described = set(spec["paths"][path])
        served = {m.lower() for m in rule.methods - {"HEAD", "OPTIONS"}}
        assert served <= described, f"{rule.rule}: {served - described} not described"


# ----------------------------------------------------------------- data dir and secret


def test_unwritable_data_dir_does_not_break_preview_or_page(
    config, unwritable_data_dir, page_url
) -> None:
    app = with_device_route(create_app({**config, "DATA_DIR": unwritable_data_dir}))
    client = app.test_client()
    info = client.post("/api/v1/info", json={"url": page_url})
    assert info.status_code == 200
    assert info.get_json()["title"] == "Lazy app"
    page = client.get("/", query_string={"url": page_url})
    assert page.status_code == 200 and "Lazy app" in page.get_data(as_text=True)
    assert client.get("/test-device").status_code == 200
    assert client.get("/readyz").status_code in (200, 503)
    from nazzil.datadir import data_dir

    assert data_dir(app) is None


def test_missing_secret_key_without_storage_gives_one_warning(
    config, unwritable_data_dir, nazzil_log
) -> None:
    settings = {**config, "DATA_DIR": unwritable_data_dir}
    del settings["SECRET_KEY"]
    app = with_device_route(create_app(settings))
    cookies = []
    for _ in range(3):
        client = app.test_client()  # a new browser each time: a new device, a new cookie
        response = client.get("/test-device")
        assert response.status_code == 200
        cookies.append(device_cookie(response))
    assert all(c is not None for c in cookies)
    assert nazzil_log.getvalue().count(SECRET_WARNING) == 1
    from nazzil.datadir import secret_key

    key = secret_key(app)
    assert len(key) >= 32
    assert key != secret_key(create_app(settings)), "random, not a constant"


def test_missing_secret_key_on_serverless_is_per_process(
    config, nazzil_log, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VERCEL", "1")
    settings = {k: v for k, v in config.items() if k != "SECRET_KEY"}
    app = with_device_route(create_app(settings))
    assert app.config["NAZZIL_MODE"] == "serverless"
    client = app.test_client()
    first = client.get("/test-device").get_json()["device"]
    assert client.get("/test-device").get_json()["device"] == first
    assert nazzil_log.getvalue().count(SECRET_WARNING) == 1
    assert not Path(config["DATA_DIR"]).exists(), "serverless never writes the key to disk"


def test_missing_secret_key_is_kept_in_the_data_dir(config, nazzil_log) -> None:
    settings = {k: v for k, v in config.items() if k != "SECRET_KEY"}
    first = with_device_route(create_app(settings))
    client = first.test_client()
    device_id = client.get("/test-device").get_json()["device"]
    key_file = Path(config["DATA_DIR"]) / "secret_key"
    assert key_file.is_file()
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    # A restarted server reads the same key, so the browser keeps its device.
    second = with_device_route(create_app(settings))
    again = second.test_client()
    again.set_cookie("nazzil_device", client.get_cookie("nazzil_device").value)
    assert again.get("/test-device").get_json()["device"] == device_id
    assert SECRET_WARNING not in nazzil_log.getvalue()


# ----------------------------------------------------------------------- device cookie


def test_device_cookie_only_when_needed(app, client, page_url) -> None:
    with_device_route(app)
    for response in (
        client.get("/"),
        client.get("/healthz"),
        client.get("/readyz"),
        client.get("/api/v1/openapi.json"),
        client.post("/api/v1/info", json={"url": page_url}),
        client.get("/api/v1/nope"),
    ):
        assert device_cookie(response) is None, response.request.path
    assert client.get_cookie("nazzil_device") is None


def test_device_cookie_is_signed_httponly_lax(app, client) -> None:
    with_device_route(app)
    response = client.get("/test-device")
    device_id = response.get_json()["device"]
    cookie = device_cookie(response)
    assert cookie is not None
    morsel = cookie["nazzil_device"]
    assert morsel["httponly"]
    assert morsel["samesite"] == "Lax"
    assert morsel["path"] == "/"
    assert int(morsel["max-age"]) > 30 * 86400
    assert not morsel["secure"], "plain http in tests"
    assert morsel.value != device_id, "the cookie is signed, not the bare id"
    signer = URLSafeSerializer(app.config["NAZZIL_SECRET_KEY"], salt="nazzil-device")
    assert signer.loads(morsel.value) == device_id
    # The browser sends it back: the same device, and no new cookie.
    again = client.get("/test-device")
    assert again.get_json()["device"] == device_id
    assert device_cookie(again) is None


def test_device_cookie_is_secure_over_https(app) -> None:
    with_device_route(app)
    response = app.test_client().get("/test-device", base_url="https://localhost")
    cookie = device_cookie(response)
    assert cookie is not None and cookie["nazzil_device"]["secure"]


@pytest.mark.parametrize(
    "forged",
    ["garbage", "eyJhIjoxfQ.bad-signature", "", "a" * 4000],
)
def test_forged_device_cookie_gets_a_new_device(app, forged: str) -> None:
    with_device_route(app)
    client = app.test_client()
    client.set_cookie("nazzil_device", forged)
    response = client.get("/test-device")
    assert response.status_code == 200
    assert device_cookie(response) is not None, "a fresh, valid cookie replaces the forged one"


def test_cookie_signed_with_another_key_is_refused(config) -> None:
    other = URLSafeSerializer("another-key", salt="nazzil-device").dumps("stolen-device-id")
    app = with_device_route(create_app(config))
    client = app.test_client()
    client.set_cookie("nazzil_device", other)
    assert client.get("/test-device").get_json()["device"] != "stolen-device-id"


# ----------------------------------------------------------------------------- logging


def test_one_access_line_per_request(client, nazzil_log) -> None:
    response = client.get("/healthz", headers={"X-Request-ID": "log-line-1"})
    assert response.status_code == 200
    lines = [line for line in nazzil_log.getvalue().splitlines() if "log-line-1" in line]
    assert len(lines) == 1
    assert re.search(r"INFO nazzil\.access \[log-line-1\] GET /healthz 200 \d+\.\dms$", lines[0])


def test_logging_is_configured_once(config) -> None:
    for _ in range(3):
        create_app(config)
    logger = logging.getLogger("nazzil")
    assert len([h for h in logger.handlers if getattr(h, "_nazzil", False)]) == 1
