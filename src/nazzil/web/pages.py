"""The HTML pages."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, render_template, request

from .. import extract
from ..errors import NazzilError

bp = Blueprint("pages", __name__)


@bp.get("/")
def index() -> str:
    """Show the paste box; with ?url= also the preview, rendered on the server."""
    url = (request.args.get("url") or "").strip()
    info: dict[str, Any] | None = None
    error: NazzilError | None = None
    if url:
        try:
            info = extract.get_info(url)
        except NazzilError as exc:
            error = exc
    return render_template("index.html", url=url, info=info, error=error)
