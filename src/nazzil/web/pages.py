"""The HTML pages: the paste box with its server-rendered preview, the fragment, the manifest."""

from __future__ import annotations

import re
from typing import Any

from flask import Blueprint, Response, current_app, render_template, request, send_from_directory

from .. import i18n
from ..errors import InvalidURL, NazzilError
from ..i18n import gettext as _

bp = Blueprint("pages", __name__)

_LINK = re.compile(r"https?://[^\s<>\"']+", re.IGNORECASE)


def shared_url(args: Any) -> str:
    """Return the link to preview: ?url=, or the first link inside a shared text or title."""
    url = (args.get("url") or "").strip()
    if url:
        return url
    # Android share sheets often put the link in text ("Look at this https://…"), not url.
    for name in ("text", "title"):
        match = _LINK.search(args.get(name) or "")
        if match:
            return match.group(0).rstrip(".,;:!?)]}»،؛؟")
    return ""


def jobs_enabled() -> bool:
    """Tell whether this deployment runs download jobs (else the page streams downloads)."""
    from .jobs import disabled_reason

    return disabled_reason(current_app) is None


def format_size(n: float | None, approx: bool = False) -> str:
    """Write a byte count for people: 812 KB, 3.4 MB (Western digits in every language)."""
    if not n:
        return ""
    text = f"{n:.0f}\u00a0" + _("B")
    for factor, unit in ((1 << 30, _("GB")), (1 << 20, _("MB")), (1 << 10, _("KB"))):
        if n >= factor:
            value = n / factor
            number = f"{value:.1f}" if value < 100 and factor > 1 << 10 else f"{value:.0f}"
            text = number + "\u00a0" + unit
            break
    # TRANSLATORS: a size estimated from the bitrate; Arabic puts a word, not "~", before it.
    return _("~%(size)s", size=text) if approx else text


def format_duration(seconds: float | None) -> str:
    """Write a duration as m:ss or h:mm:ss."""
    if seconds is None:
        return ""
    s = round(seconds)
    if s >= 3600:
        return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"
    return f"{s // 60}:{s % 60:02d}"


def _size_of(fmt: dict[str, Any], duration: float | None) -> tuple[float | None, bool]:
    """Return a format's size and whether it is estimated from its bitrate."""
    if fmt.get("filesize"):
        return fmt["filesize"], False
    if fmt.get("tbr") and duration:
        return fmt["tbr"] * 1000 / 8 * duration, True
    return None, False


def choices(info: dict[str, Any]) -> dict[str, Any]:
    """Group a video's formats into the qualities the page offers, best first, with sizes."""
    formats = info.get("formats") or []
    duration = info.get("duration")
    audio = [f for f in formats if f.get("kind") == "audio"]
    audio_size, audio_approx = _size_of(audio[0], duration) if audio else (None, False)
    heights: dict[int, dict[str, Any]] = {}
    for fmt in formats:  # best first, so the first format of each height is the one chosen
        height = fmt.get("height")
        if fmt.get("kind") == "audio" or not height or height in heights:
            continue
        size, approx = _size_of(fmt, duration)
        if size and fmt.get("kind") == "video":
            # A video-only format gets the best audio merged in.
            size, approx = size + (audio_size or 0), approx or audio_approx or not audio_size
        heights[height] = {
            "value": f"{height}p",
            "label": f"{height}p",
            "size": format_size(size, approx),
        }
    qualities = [heights[h] for h in sorted(heights, reverse=True)]
    best_size = qualities[0]["size"] if qualities else ""
    best_label = _("Best (%(quality)s)", quality=qualities[0]["label"]) if qualities else _("Best")
    if not qualities and formats:
        size, approx = _size_of(formats[0], duration)
        best_size = format_size(size, approx)
    has_audio = any(f.get("kind") != "video" for f in formats)
    return {
        "best": {"value": "best", "label": best_label, "size": best_size},
        "qualities": qualities if len(qualities) > 1 else [],
        "audio": has_audio,
        "audio_size": format_size(audio_size, audio_approx) if audio else "",
    }


def _preview(url: str) -> tuple[dict[str, Any] | None, NazzilError | None]:
    if not url:
        return None, None
    try:
        from .. import extract  # loaded with the first preview: cheap cold starts

        return extract.get_info(url), None
    except NazzilError as exc:
        return None, exc


def _page_context() -> dict[str, Any]:
    return {
        "choices": choices,
        "format_size": format_size,
        "format_duration": format_duration,
        "jobs": jobs_enabled(),
        "mode": current_app.config["NAZZIL_MODE"],
    }


@bp.get("/")
def index() -> str:
    """Show the paste box; with ?url= (or a shared text) also the preview, rendered here."""
    url = shared_url(request.args)
    info, error = _preview(url)
    return render_template(
        "index.html", url=url, info=info, error=error, strings=i18n.js_strings(), **_page_context()
    )


@bp.get("/preview")
def preview() -> Response:
    """Render the preview of ?url= as an HTML fragment for app.js (errors as a sentence)."""
    info, error = _preview((request.args.get("url") or "").strip())
    if info is None and error is None:
        error = InvalidURL()
    body = render_template("_result.html", info=info, error=error, **_page_context())
    response = Response(body, status=error.status if error else 200, mimetype="text/html")
    response.headers["X-Nazzil-Fragment"] = "1"
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.get("/manifest.webmanifest")
def manifest() -> Response:
    """Serve the web app manifest at the root, so its scope is the whole site."""
    response = send_from_directory(
        current_app.static_folder or "static",
        "manifest.webmanifest",
        mimetype="application/manifest+json",
        max_age=3600,
    )
    return response
