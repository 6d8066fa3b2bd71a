"""The one list of nazzil's settings: name, default, help; read from NAZZIL_* variables."""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

PREFIX = "NAZZIL_"


def parse_bool(value: str | bool) -> bool:
    """Read yes/no words as a bool."""
    if isinstance(value, bool):
        return value
    return str(value).strip().lower() in {"1", "true", "yes", "on"}


_SIZE_UNITS = {"": 1, "B": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}


def parse_size(value: str | int) -> int:
    """Read a byte count such as 500M, 2G or 1048576; 0 means no limit."""
    if isinstance(value, int):
        return value
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:I?B)?\s*", str(value).upper())
    if not m:
        raise ValueError(f"not a size: {value!r}")
    return int(float(m.group(1)) * _SIZE_UNITS[m.group(2)])


_TIME_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_seconds(value: str | float | int) -> float:
    """Read a duration such as 90, 90s, 15m, 6h or 7d; 0 means no limit."""
    if isinstance(value, (int, float)):
        return float(value)
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*", str(value).lower())
    if not m:
        raise ValueError(f"not a duration: {value!r}")
    return float(m.group(1)) * _TIME_UNITS[m.group(2)]


def parse_list(value: str | list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """Read a comma-separated list."""
    if isinstance(value, (list, tuple)):
        return tuple(value)
    return tuple(part.strip() for part in str(value).split(",") if part.strip())


# The grammar of the `limits` library (e.g. 30/minute, 10 per 2 hours;200/day), checked here
# without importing it, so start-up stays fast.
_ONE_RATE = r"\s*\d+\s*(?:/|\s+per\s+)\s*(?:\d+\s*)?(?:second|minute|hour|day|month|year)s?\s*"
_RATE = re.compile(rf"{_ONE_RATE}(?:[;,]{_ONE_RATE})*", re.IGNORECASE)


def parse_rate(value: str) -> str:
    """Read a rate limit such as 30/minute or 10/minute;200/day; off, none or 0 disable it."""
    text = str(value).strip()
    if text.lower() in ("", "0", "off", "none", "no", "false"):
        return ""
    if not _RATE.fullmatch(text):
        raise ValueError(f"not a rate limit: {value!r}")
    return text


@dataclass(frozen=True)
class Setting:
    """One setting: its name without the prefix, default, help, and parser."""

    name: str
    default: Any
    help: str
    parse: Callable[[Any], Any] = str

    @property
    def key(self) -> str:
        """The environment variable and app.config key."""
        return PREFIX + self.name


SETTINGS: tuple[Setting, ...] = (
    Setting(
        "MODE",
        "",
        "serverless, single or cluster; empty chooses serverless when VERCEL is "
        "set, cluster when REDIS_URL is set, else single.",
    ),
    Setting(
        "DATA_DIR",
        "",
        "Where the database and downloaded files live; empty means "
        "$XDG_DATA_HOME/nazzil (or ~/.local/share/nazzil), and /tmp/nazzil on serverless.",
    ),
    Setting("DATABASE_URL", "", "SQLAlchemy URL of the database; empty means SQLite in DATA_DIR."),
    Setting("REDIS_URL", "", "Redis URL for the job queue and rate limits in a cluster."),
    Setting(
        "STORAGE_URL",
        "",
        "Where finished files are kept: empty for DATA_DIR/files, or "
        "s3://bucket/prefix for S3-compatible storage.",
    ),
    Setting(
        "SECRET_KEY",
        "",
        "Signs the device cookie. Empty: kept in DATA_DIR/secret_key, or a "
        "random per-process key (with a warning) where nothing can be written.",
    ),
    Setting(
        "TRUSTED_HOSTS",
        "",
        "Comma list of host, host:port or CIDR that may be fetched "
        "although private (LAN use, tests).",
        parse_list,
    ),
    Setting(
        "HOSTNAMES",
        "",
        "Comma list of the host names (and host:port) this server answers to, e.g. "
        "nazzil.example.org; other Host headers get 400. Empty accepts any. Set it on an "
        "instance browsers can reach, so a hostile page cannot use DNS rebinding against it.",
        parse_list,
    ),
    Setting(
        "MAX_FILESIZE",
        "4G",
        "Largest media file to fetch (bytes, or 500M, 2G); 0 for no limit.",
        parse_size,
    ),
    Setting(
        "MAX_DURATION",
        "6h",
        "Longest media to fetch (seconds, or 90m, 6h); 0 for no limit.",
        parse_seconds,
    ),
    Setting(
        "WORKERS", 2, "Parallel downloads run by `nazzil serve` (and per `nazzil worker`).", int
    ),
    Setting(
        "RETENTION", "24h", "How long finished files stay before they are removed.", parse_seconds
    ),
    Setting(
        "JOB_HISTORY",
        "30d",
        "How long finished, failed and cancelled jobs stay listed "
        "(their files go earlier, after RETENTION); 0 keeps them.",
        parse_seconds,
    ),
    Setting(
        "MAX_QUEUED_PER_DEVICE",
        25,
        "Most jobs one device may have queued or running at once; 0 for no limit.",
        int,
    ),
    Setting(
        "MIN_FREE_DISK",
        "1G",
        "New jobs are refused while the data directory's disk has "
        "less free space than this; 0 turns the check off.",
        parse_size,
    ),
    Setting(
        "MAX_ATTEMPTS",
        3,
        "How many times a job whose worker died is run again before it fails.",
        int,
    ),
    Setting(
        "HEARTBEAT",
        "5",
        "Seconds between a worker's heartbeats for its running jobs (also "
        "how soon a running job notices it was cancelled).",
        parse_seconds,
    ),
    Setting(
        "STALE_AFTER",
        "60",
        "Seconds without a heartbeat after which a running job's "
        "worker is taken for dead and the job is queued again.",
        parse_seconds,
    ),
    Setting(
        "QUEUE_NAME", "nazzil", "Name of the job queue (lets several deployments share one Redis)."
    ),
    Setting("FFMPEG", "", "Path of the ffmpeg binary; empty uses the imageio-ffmpeg wheel's."),
    Setting(
        "HOST",
        "",
        "Address `nazzil serve` binds; empty means 127.0.0.1, or 0.0.0.0 when "
        "PORT is set by a platform.",
    ),
    Setting("PORT", 0, "Port `nazzil serve` binds; 0 means $PORT or 8000.", int),
    Setting(
        "SERVER",
        "auto",
        "Web server of `nazzil serve`: gunicorn, waitress, or auto (gunicorn, but waitress "
        "on Windows).",
    ),
    Setting(
        "READ_TIMEOUT",
        "10",
        "Seconds a client may take to send a request (headers, and a body up to MAX_BODY) "
        "before gunicorn closes the connection, against slowloris; 0 for no limit.",
        parse_seconds,
    ),
    Setting(
        "THREADS", 32, "Request threads of the production server (streams hold one each).", int
    ),
    Setting("LOG_LEVEL", "INFO", "Logging level: DEBUG, INFO, WARNING or ERROR."),
    Setting(
        "FETCH_TIMEOUT",
        "15",
        "Seconds to wait for a site to answer one network read.",
        parse_seconds,
    ),
    Setting(
        "PREVIEW_TIMEOUT",
        "45",
        "Longest a preview (or the start of a stream) may take in all, however slowly a site "
        "trickles its answer; 0 for no overall limit.",
        parse_seconds,
    ),
    Setting(
        "PREVIEW_CACHE_TTL",
        "300",
        "Seconds a preview, and the formats a stream chose, are remembered; 0 turns the "
        "caches off.",
        parse_seconds,
    ),
    Setting("PREVIEW_CACHE_SIZE", 256, "How many previews are remembered.", int),
    Setting("MAX_URL_LENGTH", 4096, "Longest accepted URL, in characters.", int),
    Setting("MAX_BODY", "64K", "Largest accepted request body.", parse_size),
    Setting("PLAYLIST_LIMIT", 50, "Most entries of a playlist that are previewed.", int),
    Setting(
        "RATE_LIMIT_PREVIEW",
        "60/minute",
        "Previews allowed per device and per client "
        "address, e.g. 30/minute or 10/minute;200/day; off disables.",
        parse_rate,
    ),
    Setting(
        "RATE_LIMIT_JOBS",
        "20/minute",
        "Download jobs (and retries) that may be created "
        "per device and per client address; off disables.",
        parse_rate,
    ),
    Setting(
        "RATE_LIMIT_STREAM",
        "20/minute",
        "Streamed downloads allowed per device and per client address; off disables.",
        parse_rate,
    ),
    Setting(
        "RATE_LIMIT_LOGIN",
        "10/minute",
        "Access-token attempts on the login page per client address; off disables.",
        parse_rate,
    ),
    Setting(
        "RATE_LIMIT_STORAGE",
        "",
        "Where rate-limit counters live: empty means REDIS_URL "
        "when set (shared by a cluster), else memory://; or any limits storage URI.",
    ),
    Setting(
        "PROXY_HOPS",
        0,
        "How many reverse proxies stand in front of nazzil; the client "
        "address (and https) is then read from X-Forwarded-For/-Proto. 0 trusts no header.",
        int,
    ),
    Setting(
        "ACCESS_TOKENS",
        "",
        "Comma list of access tokens (or sha256:<hex> of a token); when "
        "set, the API needs Authorization: Bearer <token> and the page asks for one.",
        parse_list,
    ),
)

BY_NAME: dict[str, Setting] = {s.name: s for s in SETTINGS}


def defaults() -> dict[str, Any]:
    """Map every setting's config key to its parsed default."""
    return {s.key: s.parse(s.default) for s in SETTINGS}


def from_environ(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Read the settings that are set in the environment, parsed."""
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for s in SETTINGS:
        raw = environ.get(s.key)
        if raw is not None and raw != "":
            try:
                values[s.key] = s.parse(raw)
            except ValueError as exc:
                raise ValueError(f"{s.key}: {exc}") from None
    return values


def normalize(config: Mapping[str, Any]) -> dict[str, Any]:
    """Parse values given as strings in a test or user mapping; keys without prefix allowed."""
    out: dict[str, Any] = {}
    for key, value in config.items():
        name = key[len(PREFIX) :] if key.startswith(PREFIX) else key
        setting = BY_NAME.get(name)
        if setting is None:
            out[key] = value
        else:
            out[setting.key] = setting.parse(value)
    return out


def mode(config: Mapping[str, Any], environ: Mapping[str, str] | None = None) -> str:
    """Tell which of the three modes this deployment runs in."""
    environ = os.environ if environ is None else environ
    chosen = str(config.get(PREFIX + "MODE") or "").lower()
    if chosen in {"serverless", "single", "cluster"}:
        return chosen
    if environ.get("VERCEL"):
        return "serverless"
    if config.get(PREFIX + "REDIS_URL"):
        return "cluster"
    return "single"
