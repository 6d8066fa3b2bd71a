"""The API's typed format choices, mapped to yt-dlp format selectors; nothing else passes."""

from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import InvalidRequest

AUDIO_FORMATS = ("mp3", "m4a", "opus")
_HEIGHT = re.compile(r"([1-9][0-9]{1,3})p")
_FORMAT_ID = re.compile(r"[A-Za-z0-9_.\-]{1,64}")


@dataclass(frozen=True)
class Choice:
    """A validated format request: the yt-dlp selector and, for audio, the target codec."""

    format: str
    selector: str
    audio_format: str | None = None

    @property
    def audio_only(self) -> bool:
        """Tell whether the result is an audio file."""
        return self.audio_format is not None


def choose(fmt: str | None = "best", audio_format: str | None = None) -> Choice:
    """Validate the API's format fields and build the yt-dlp selector for them."""
    fmt = (fmt or "best").strip()
    if audio_format is not None and audio_format not in AUDIO_FORMATS:
        raise InvalidRequest("The field 'audio_format' must be one of mp3, m4a, opus.")
    if fmt == "best":
        return Choice(fmt, "bv*+ba/b")
    if fmt == "audio":
        return Choice(fmt, "ba/b", audio_format or "m4a")
    m = _HEIGHT.fullmatch(fmt)
    if m:
        h = int(m.group(1))
        # Last, a file whose height nobody announced (a plain <video>, a direct link): it may
        # be that height; refusing it made every "<height>p" fail on such links.
        return Choice(fmt, f"bv*[height<={h}]+ba/b[height<={h}]/b[height<=?{h}]")
    if not _FORMAT_ID.fullmatch(fmt):
        raise InvalidRequest(
            "The field 'format' must be best, audio, a height such as 720p, or a format_id."
        )
    # A video-only format gets the best audio merged in; yt-dlp falls back to it alone.
    return Choice(fmt, f"{fmt}+ba/{fmt}", audio_format if audio_format else None)
