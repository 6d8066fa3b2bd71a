"""The `nazzil` command: serve, info (and more as nazzil grows)."""

from __future__ import annotations

import json
import os
import sys

import click

from . import __version__


def _app(quiet: bool = False):  # noqa: ANN202 - Flask is imported lazily: a fast `--help`
    from .app import create_app

    # One-shot commands print their answer; INFO lines would only clutter the terminal.
    config = {"LOG_LEVEL": "WARNING"} if quiet and "NAZZIL_LOG_LEVEL" not in os.environ else None
    try:
        return create_app(config)
    except ValueError as exc:  # a bad NAZZIL_* value: say which, without a traceback
        raise click.ClickException(str(exc)) from None


def _fail(exc: Exception) -> None:
    """Print a coded error as JSON on stderr (with a hint where one helps) and exit 1."""
    code, message = getattr(exc, "code", "error"), getattr(exc, "message", str(exc))
    click.echo(json.dumps({"error": {"code": code, "message": message}}), err=True)
    if code == "blocked_address":
        click.echo(
            "hint: to fetch from your own network, add the host (host, host:port or CIDR) "
            "to NAZZIL_TRUSTED_HOSTS.",
            err=True,
        )
    sys.exit(1)


@click.group()
@click.version_option(__version__, prog_name="nazzil")
def main() -> None:
    """nazzil: a self-hosted web video downloader."""


@main.command()
@click.option(
    "--host", default=None, help="Address to bind (default 127.0.0.1; 0.0.0.0 with $PORT)."
)
@click.option("--port", default=None, type=int, help="Port to bind (default $PORT or 8000).")
def serve(host: str | None, port: int | None) -> None:
    """Run the production web server (gunicorn with threads; waitress on Windows)."""
    from . import server

    _limit_malloc_arenas()
    app = _app()
    platform_port = os.environ.get("PORT")
    host = host or app.config["NAZZIL_HOST"] or ("0.0.0.0" if platform_port else "127.0.0.1")
    port = port or app.config["NAZZIL_PORT"] or int(platform_port or 8000)
    try:
        name = server.choose(app.config["NAZZIL_SERVER"])
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    where = f"[{host}]" if ":" in host else host
    click.echo(
        f"nazzil {__version__} on http://{where}:{port} ({app.config['NAZZIL_MODE']} mode, {name})",
        err=True,
    )
    server.run(app, host, port, list(app.extensions["nazzil"].get("on_serve", [])))


def _limit_malloc_arenas() -> None:
    """Let the server's threads share two glibc malloc arenas (unless MALLOC_ARENA_MAX is set)."""
    # Each request thread otherwise keeps the freed buffers of its last stream in an arena of
    # its own: measured ~190 MiB RSS after 40 streams of 50 MB instead of ~95 MiB.
    if os.environ.get("MALLOC_ARENA_MAX") or not sys.platform.startswith("linux"):
        return
    import contextlib
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).mallopt(-8, 2)  # -8 is M_ARENA_MAX; musl has no arenas and ignores it


@main.command()
@click.argument("url")
def info(url: str) -> None:
    """Print what is at URL (title, duration, formats) as JSON."""
    from .errors import NazzilError
    from .extract import get_info

    app = _app(quiet=True)
    with app.app_context():
        try:
            result = get_info(url, app)
        except NazzilError as exc:
            _fail(exc)
    click.echo(json.dumps(result, ensure_ascii=False, indent=2))


@main.command()
@click.option(
    "--workers", "-w", default=None, type=int, help="Parallel downloads (default NAZZIL_WORKERS)."
)
def worker(workers: int | None) -> None:
    """Run download workers only (no web server) until SIGINT or SIGTERM."""
    from .queue import run_worker

    app = _app()
    click.echo(f"nazzil {__version__} worker ({app.config['NAZZIL_MODE']} mode)", err=True)
    run_worker(app, workers)


@main.command()
@click.argument("url")
@click.option(
    "--format",
    "-f",
    "fmt",
    default="best",
    show_default=True,
    help="best, <height>p (e.g. 720p), audio, or a format_id.",
)
@click.option(
    "--audio-format",
    default=None,
    type=click.Choice(["mp3", "m4a", "opus"]),
    help="Audio codec with -f audio (default m4a).",
)
@click.option("--start", default=None, type=float, help="Cut from this second.")
@click.option("--end", default=None, type=float, help="Cut to this second.")
@click.option(
    "--output",
    "-o",
    "out_dir",
    default=".",
    show_default=True,
    type=click.Path(file_okay=False),
    help="Directory for the file.",
)
def download(
    url: str,
    fmt: str,
    audio_format: str | None,
    start: float | None,
    end: float | None,
    out_dir: str,
) -> None:
    """Download URL into a directory, named after its title; print the file's path."""
    import secrets
    from pathlib import Path

    from . import download as dl
    from . import netguard
    from .errors import NazzilError
    from .formats import choose
    from .storage import LocalStorage

    app = _app(quiet=True)
    target = Path(out_dir)
    work = target / f".nazzil-{secrets.token_hex(6)}"

    def report(progress: dict) -> None:
        if progress.get("percent") is not None:
            click.echo(f"\r{progress['percent']:5.1f}%", nl=False, err=True)

    with app.app_context():
        try:
            choice = choose(fmt, audio_format)
            url = netguard.precheck(
                url, netguard.policy_for(app), int(app.config["NAZZIL_MAX_URL_LENGTH"])
            )
            result = dl.fetch(
                url,
                choice,
                work,
                config=app.config,
                policy=netguard.policy_for(app),
                start=start,
                end=end,
                report=report if sys.stderr.isatty() else None,
            )
            name = LocalStorage(target).put(result.path, result.name, "")
        except NazzilError as exc:
            _fail(exc)
        finally:
            dl.clear_dir(work)
    if sys.stderr.isatty():
        click.echo("", err=True)
    click.echo(str(target / name))


@main.group()
def db() -> None:
    """Manage the database."""


@db.command("upgrade")
def db_upgrade() -> None:
    """Create or migrate the database schema to the current version."""
    from . import db as database

    app = _app()
    database.upgrade(app)
    click.echo(f"database is up to date: {database.database_url(app).split('://')[0]}", err=True)


if __name__ == "__main__":
    main()
