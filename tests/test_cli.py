"""The `nazzil` command: `info` prints MediaInfo JSON, `serve` really serves over HTTP."""

from __future__ import annotations

import json
import re
import shutil
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from tests.mediaserver import MediaServer, no_video_page, video_page
from tests.serve import NazzilServer, free_port

from nazzil import __version__
from nazzil.cli import main


@pytest.fixture
def cli_env(tmp_path: Path, media_server: MediaServer) -> dict[str, str]:
    """NAZZIL_* variables for a command run against the local media server."""
    return {
        "NAZZIL_TRUSTED_HOSTS": f"127.0.0.1:{media_server.port}",
        "NAZZIL_DATA_DIR": str(tmp_path / "data"),
        "NAZZIL_SECRET_KEY": "cli-test-key",
        "NAZZIL_FETCH_TIMEOUT": "2",
        "NAZZIL_LOG_LEVEL": "WARNING",
    }


@pytest.fixture
def page(media_server: MediaServer) -> str:
    return media_server.add_page(
        "/cli/video.html", video_page("/sample.mp4", "Seen from the CLI", poster="/thumb.jpg")
    )


def test_version() -> None:
    result = CliRunner().invoke(main, ["--version"])
    assert result.exit_code == 0
    assert __version__ in result.output


def test_info_prints_media_info_json(cli_env: dict[str, str], page: str) -> None:
    result = CliRunner().invoke(main, ["info", page], env=cli_env)
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert info["type"] == "video"
    assert info["title"] == "Seen from the CLI"
    assert info["duration"] == pytest.approx(4, abs=0.5)
    assert info["thumbnail"].endswith("/thumb.jpg")
    assert info["formats"] and info["formats"][0]["kind"] == "video+audio"


@pytest.mark.parametrize(
    ("path", "code"),
    [("/status/404", "upstream_error"), ("/cli/none.html", "unsupported_url")],
)
def test_info_failure_is_a_json_error_and_exit_1(
    cli_env: dict[str, str], media_server: MediaServer, path: str, code: str
) -> None:
    media_server.add_page("/cli/none.html", no_video_page("No video for the CLI"))
    result = CliRunner().invoke(main, ["info", media_server.url(path)], env=cli_env)
    assert result.exit_code == 1
    assert result.stdout == ""
    error = json.loads(result.stderr.strip().splitlines()[-1])
    assert error["error"]["code"] == code


@pytest.mark.parametrize(("url", "code"), [("file:///etc/passwd", "invalid_url"),
                                           ("not a link", "invalid_url")])  # fmt: skip
def test_info_bad_url(cli_env: dict[str, str], url: str, code: str) -> None:
    result = CliRunner().invoke(main, ["info", url], env=cli_env)
    assert result.exit_code == 1
    assert json.loads(result.stderr.strip().splitlines()[-1])["error"]["code"] == code


def test_bad_setting_is_a_clear_error(cli_env: dict[str, str], page: str) -> None:
    result = CliRunner().invoke(main, ["info", page], env={**cli_env, "NAZZIL_WORKERS": "many"})
    assert result.exit_code == 1
    assert "NAZZIL_WORKERS" in result.stderr
    assert "Traceback" not in result.output


# ----------------------------------------------------------------------------- serve


def _nazzil_command() -> list[str]:
    script = Path(sys.executable).with_name("nazzil")
    if script.exists():
        return [str(script)]
    found = shutil.which("nazzil")
    return [found] if found else [sys.executable, "-m", "nazzil.cli"]


@pytest.fixture
def served(cli_env: dict[str, str], tmp_path: Path) -> Iterator[NazzilServer]:
    """`nazzil serve` as a real process on a free port."""
    env = {**cli_env, "NAZZIL_LOG_LEVEL": "INFO", "PORT": None}
    with NazzilServer(tmp_path, env, command=_nazzil_command()) as server:
        yield server


def test_serve_answers_health_and_preview_over_http(served, page: str) -> None:
    base = served.base
    with urllib.request.urlopen(base + "/healthz", timeout=5) as resp:
        assert json.load(resp) == {"status": "ok", "version": __version__}
        assert re.fullmatch(r"[0-9a-f]{16}", resp.headers["X-Request-ID"])
    request = urllib.request.Request(
        base + "/api/v1/info",
        data=json.dumps({"url": page}).encode(),
        headers={"Content-Type": "application/json", "X-Request-ID": "over-http-1"},
    )
    with urllib.request.urlopen(request, timeout=30) as resp:
        assert resp.headers["X-Request-ID"] == "over-http-1"
        info = json.load(resp)
    assert info["title"] == "Seen from the CLI"
    assert info["duration"] == pytest.approx(4, abs=0.5)
    # Errors keep the shape over a real socket too.
    with pytest.raises(urllib.error.HTTPError) as excinfo:
        urllib.request.urlopen(base + "/api/v1/info?url=ftp://x", timeout=5)
    assert excinfo.value.code == 400
    assert json.load(excinfo.value)["error"]["code"] == "invalid_url"
    with urllib.request.urlopen(base + "/", timeout=5) as resp:
        assert resp.status == 200 and "text/html" in resp.headers["Content-Type"]
    served.stop()
    err = served.log_text()
    assert f"on {base}" in err, "the banner says where it listens"
    assert "[over-http-1] POST /api/v1/info 200" in err, "one access line per request"


def test_serve_binds_all_interfaces_when_a_platform_sets_port(
    cli_env: dict[str, str], tmp_path: Path
) -> None:
    port = free_port()
    env = {**cli_env, "PORT": str(port), "NAZZIL_HOST": None}
    server = NazzilServer(tmp_path, env, port=port, command=_nazzil_command(), args=[])
    with server:
        pass
    assert f"http://0.0.0.0:{server.port}" in server.log_text()


def test_info_on_an_untrusted_local_address_hints_at_trusted_hosts(
    cli_env: dict[str, str], canary: MediaServer
) -> None:
    result = CliRunner().invoke(main, ["info", canary.url("/x.mp4")], env=cli_env)
    assert result.exit_code == 1
    assert json.loads(result.stderr.splitlines()[0])["error"]["code"] == "blocked_address"
    assert "NAZZIL_TRUSTED_HOSTS" in result.stderr
    assert canary.requests == []
