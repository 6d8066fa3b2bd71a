"""Safe file names from media titles, their media types, and the Content-Disposition header."""

from __future__ import annotations

import re
import unicodedata
from urllib.parse import quote

# Bidi overrides/isolates can make "evil\u202egpj.exe" display as "evilexe.jpg".
_BIDI = dict.fromkeys(map(ord, "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\ufeff"))
# Separators and characters that Windows or shells treat specially.
_UNSAFE = re.compile(r'[/\\:*?"<>|\x00-\x1f\x7f]')
_SPACES = re.compile(r"\s+")
_WINDOWS_RESERVED = {
    "con",
    "prn",
    "aux",
    "nul",
    *(f"com{i}" for i in range(1, 10)),
    *(f"lpt{i}" for i in range(1, 10)),
}
_EXT = re.compile(r"[a-z0-9]{1,8}")
# Most file systems allow 255 bytes per name; leave room for " (1)" style suffixes.
MAX_NAME_BYTES = 200
DEFAULT_STEM = "video"
# Media types of the files nazzil sends and stores, by extension.
MEDIA_TYPES = {
    "mp4": "video/mp4",
    "m4v": "video/mp4",
    "webm": "video/webm",
    "mkv": "video/x-matroska",
    "mov": "video/quicktime",
    "3gp": "video/3gpp",
    "flv": "video/x-flv",
    "ts": "video/mp2t",
    "m4a": "audio/mp4",
    "mp3": "audio/mpeg",
    "opus": "audio/ogg",
    "ogg": "audio/ogg",
    "oga": "audio/ogg",
    "aac": "audio/aac",
    "flac": "audio/flac",
    "wav": "audio/wav",
}


def media_type(name: str) -> str:
    """The media type for a file name's extension (application/octet-stream if unknown)."""
    return MEDIA_TYPES.get(name.rpartition(".")[2].lower(), "application/octet-stream")


def _clean(text: str) -> str:
    text = unicodedata.normalize("NFC", text).translate(_BIDI)
    # Drop control, surrogate, private-use and unassigned characters; keep ZWJ/ZWNJ (Cf)
    # because Persian and Arabic spelling uses them.
    text = "".join(c for c in text if unicodedata.category(c) not in ("Cc", "Cs", "Co", "Cn"))
    text = _UNSAFE.sub(" ", text)
    return _SPACES.sub(" ", text).strip(" .")


def _reserved(stem: str) -> bool:
    # Windows also reserves "COM¹", "ＣＯＮ" and "CON .txt": compare the folded first part.
    first = unicodedata.normalize("NFKD", stem).split(".")[0].strip(" ").lower()
    return first in _WINDOWS_RESERVED


def _visible(text: str) -> bool:
    # Letters, digits, punctuation or symbols (emoji included); not only spaces and
    # format characters such as zero-width spaces, which would make an invisible name.
    return any(unicodedata.category(c)[0] in "LNPS" for c in text)


def _truncate_utf8(text: str, limit: int) -> str:
    data = text.encode("utf-8")
    if len(data) <= limit:
        return text
    return data[:limit].decode("utf-8", "ignore").rstrip(" .")


def safe_filename(title: str | None, ext: str | None, *, default: str = DEFAULT_STEM) -> str:
    """Build a file name from a title (Arabic and other scripts kept) and an extension."""
    stem = _clean(title or "")
    if not _visible(stem):
        stem = default
    elif _reserved(stem):
        stem = f"_{stem}"
    ext = (ext or "").lower().lstrip(".")
    suffix = f".{ext}" if _EXT.fullmatch(ext) else ""
    stem = _truncate_utf8(stem, MAX_NAME_BYTES - len(suffix)) or default
    return stem + suffix


def ascii_filename(name: str, *, default: str = DEFAULT_STEM) -> str:
    """Return an ASCII-only fallback of a file name for old clients."""
    stem, dot, ext = name.rpartition(".")
    if not dot:
        stem, ext = name, ""
    folded = unicodedata.normalize("NFKD", stem).encode("ascii", "ignore").decode("ascii")
    folded = _SPACES.sub(" ", _UNSAFE.sub(" ", folded.replace("'", ""))).strip(" .")
    # A title in a non-Latin script folds to nothing or to punctuation only.
    if not any(c.isalnum() for c in folded):
        folded = default
    elif _reserved(folded):
        folded = f"_{folded}"
    return f"{folded}.{ext}" if dot and ext.isascii() else folded


def content_disposition(name: str, disposition: str = "attachment") -> str:
    """Build a Content-Disposition header with an ASCII filename and a UTF-8 filename*."""
    name = safe_filename(*_split_ext(name))
    fallback = ascii_filename(name)
    encoded = quote(name, safe="!#$&+-.^_`|~")
    return f"{disposition}; filename=\"{fallback}\"; filename*=UTF-8''{encoded}"


def _split_ext(name: str) -> tuple[str, str]:
    stem, dot, ext = name.rpartition(".")
    if dot and _EXT.fullmatch(ext.lower()):
        return stem, ext
    return name, ""
