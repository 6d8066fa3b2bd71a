"""nazzil's MediaInfo: yt-dlp's info dicts mapped to the preview the API and the page show."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urljoin

from . import netguard

AUDIO_EXTS = {"m4a", "mp3", "opus", "ogg", "oga", "aac", "wav", "flac", "weba"}


def _kind(fmt: dict[str, Any]) -> str:
    vcodec, acodec = fmt.get("vcodec"), fmt.get("acodec")
    if vcodec == "none" or (vcodec is None and fmt.get("ext") in AUDIO_EXTS):
        return "audio"
    if acodec == "none":
        return "video"
    return "video+audio"


def _format(fmt: dict[str, Any]) -> dict[str, Any]:
    def num(key: str) -> Any:
        value = fmt.get(key)
        return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None

    def codec(key: str) -> str | None:
        value = fmt.get(key)
        return value if isinstance(value, str) and value != "none" else None

    return {
        "format_id": str(fmt.get("format_id")),
        "ext": fmt.get("ext"),
        "kind": _kind(fmt),
        "width": num("width"),
        "height": num("height"),
        "fps": num("fps"),
        "vcodec": codec("vcodec"),
        "acodec": codec("acodec"),
        "tbr": num("tbr"),
        "filesize": num("filesize") or num("filesize_approx"),
        "protocol": fmt.get("protocol"),
    }


def usable(fmt: dict[str, Any]) -> bool:
    """Tell whether a format is media (not a storyboard of thumbnails)."""
    # Storyboards are image strips; mhtml is their container.
    return fmt.get("ext") != "mhtml" and "storyboard" not in str(fmt.get("format_note") or "")


def is_playlist(info: dict[str, Any]) -> bool:
    """Tell whether an info dict holds several videos."""
    return info.get("_type") in ("playlist", "multi_video")


def usable_formats(video: dict[str, Any]) -> list[dict[str, Any]]:
    """A video's media formats, worst first (a single-file video is its own format)."""
    return [f for f in (video.get("formats") or [video]) if usable(f)]


def seconds(value: Any) -> float | None:
    """A duration as a float, or None when it is not a number."""
    return float(value) if isinstance(value, (int, float)) else None


def is_web_url(url: Any) -> bool:
    """Tell whether url is an http(s) link (not file:, data:, rtmp: ...)."""
    return isinstance(url, str) and url.split(":", 1)[0].lower() in netguard.ALLOWED_SCHEMES


def from_html5(info: dict[str, Any]) -> bool:
    """Tell whether yt-dlp found this video as a page's plain <video> element."""
    return str(info.get("extractor") or "").startswith("html5")


def title_of(info: dict[str, Any], single_html5: bool) -> str | None:
    """Return a video's title, without the " (1)" yt-dlp adds to a page's only <video>."""
    title = info.get("title")
    if isinstance(title, str) and single_html5:
        title = re.sub(r" \(1\)$", "", title)
    return title


def to_media_info(
    info: dict[str, Any],
    *,
    single_html5: bool = False,
    policy: netguard.Policy | None = None,
) -> dict[str, Any]:
    """Map a yt-dlp info dict to the MediaInfo of the API (formats best first)."""
    playlist = is_playlist(info)
    page = info.get("webpage_url") or info.get("original_url") or info.get("url")
    thumbnail = info.get("thumbnail")
    if isinstance(thumbnail, str) and page:
        thumbnail = urljoin(page, thumbnail)  # generic pages may give a relative og:image
    if isinstance(thumbnail, str) and not netguard.browser_may_load(thumbnail, policy):
        thumbnail = None  # the page would make the viewer's browser probe a private address
    duration = info.get("duration")
    result: dict[str, Any] = {
        "type": "playlist" if playlist else "video",
        "url": info.get("original_url") or page,
        "webpage_url": page,
        "extractor": info.get("extractor"),
        "id": str(info["id"]) if info.get("id") is not None else None,
        "title": title_of(info, single_html5),
        "duration": seconds(duration),
        "thumbnail": thumbnail if isinstance(thumbnail, str) else None,
        "uploader": info.get("uploader"),
        "upload_date": info.get("upload_date"),
        "formats": [],
        "entries": None,
    }
    if playlist:
        result["entries"] = []
        for entry in info.get("entries") or []:
            if not entry:
                continue
            item = to_media_info(entry, policy=policy)
            if item["url"] in (result["url"], page):
                # Videos of one page share its link; a media file's own URL lets a job or a
                # stream ask for exactly this one.
                item["url"] = _own_link(entry) or item["url"]
            result["entries"].append(item)
    else:
        formats = usable_formats(info)
        result["formats"] = [_format(f) for f in reversed(formats)]
    return result


def _own_link(entry: dict[str, Any]) -> str | None:
    """Return the URL of an entry that is one media file or one HLS/DASH manifest, else None."""
    formats = usable_formats(entry)
    if len(formats) == 1 and formats[0].get("protocol") in ("http", "https"):
        url = formats[0].get("url")
    else:
        # All qualities of one HLS master playlist or DASH manifest: the manifest opens alone.
        manifests = {f.get("manifest_url") for f in formats}
        url = manifests.pop() if len(manifests) == 1 else None
    return url if is_web_url(url) else None
