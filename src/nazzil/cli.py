"""The `nazzil` command: serve, info (and more as nazzil grows)."""

from __future__ import annotations

import json
import os
import sys

import click

from . import __version__


def _app():  # noqa: ANN202 - Flask is imported lazily to keep `nazzil --help` fast
    from .app import create_app

    return create_app()


@click.group()
@click.version_option(__version__, prog_name="nazzil")
def main() -> None:
    """nazzil: a self-hosted web video downloader."""


@main.command()
@click.option("--host", default=None, help="Address to bind (default 127.0.0.1; 0.0.0.0 with $PORT).")
@click.option("--port", default=None, type=int, help="Port to bind (default $PORT or 8000).")
def serve(host: str | None, port: int | None) -> None:
    """Run the production web server (waitress, threaded)."""
    import waitress

    app = _app()
    platform_port = os.environ.get("PORT")
    host = host or app.config["NAZZIL_HOST"] or ("0.0.0.0" if platform_port else "127.0.0.1")
    port = port or app.config["NAZZIL_PORT"] or int(platform_port or 8000)
    for start in app.extensions["nazzil"].get("on_serve", []):
        start(app)
    click.echo(f"nazzil {__version__} on http://{host}:{port} ({app.config['NAZZIL_MODE']} mode)",
               err=True)
    waitress.serve(
        app,
        host=host,
        port=port,
        threads=app.config["NAZZIL_THREADS"],
        ident="nazzil",
        # Keep streamed responses in memory and push back on the app instead of spooling to disk.
        outbuf_overflow=8 * 1024 * 1024,
        outbuf_high_watermark=4 * 1024 * 1024,
        channel_timeout=300,
        _quiet=True,
    )


@main.command()
@click.argument("url")
def info(url: str) -> None:
    """Print what is at URL (title, duration, formats) as JSON."""
    from .errors import NazzilError
    from .extract import get_info

    app = _app()
    with app.app_context():
        try:
            result = get_info(url, app)
        except NazzilError as exc:
            click.echo(json.dumps({"error": {"code": exc.code, "message": exc.message}}), err=True)
            sys.exit(1)
    click.echo(json.dumps(result, ensure_ascii=False, indent=2))


if __name__ == "__main__":
    main()
