"""The data directory and the secret key, found or created on first use with safe fallbacks."""

from __future__ import annotations

import logging
import os
import secrets
import tempfile
from pathlib import Path

from flask import Flask

from . import settings

log = logging.getLogger(__name__)


def _candidates(app: Flask) -> list[Path]:
    configured = app.config.get("NAZZIL_DATA_DIR")
    if configured:
        return [Path(configured).expanduser()]
    if settings.mode(app.config) == "serverless":
        return [Path(tempfile.gettempdir()) / "nazzil"]
    xdg = os.environ.get("XDG_DATA_HOME")
    base = Path(xdg) if xdg else Path.home() / ".local" / "share"
    return [base / "nazzil", Path(tempfile.gettempdir()) / f"nazzil-{os.getuid()}"]


def data_dir(app: Flask) -> Path | None:
    """Return a writable data directory, creating it on first use; None if there is none."""
    cache = app.extensions.setdefault("nazzil", {})
    if "data_dir" in cache:
        return cache["data_dir"]
    found: Path | None = None
    for path in _candidates(app):
        try:
            path.mkdir(parents=True, exist_ok=True)
            probe = path / ".write-test"
            probe.write_bytes(b"")
            probe.unlink()
            found = path
            break
        except OSError as exc:
            log.warning("data directory %s is not usable: %s", path, exc)
    if found is None:
        log.warning("no writable data directory: previews and streams still work, jobs do not")
    cache["data_dir"] = found
    return found


def secret_key(app: Flask) -> bytes:
    """Return the key that signs cookies: configured, kept in the data dir, or per-process."""
    cache = app.extensions.setdefault("nazzil", {})
    if "secret_key" in cache:
        return cache["secret_key"]
    key: bytes | None = None
    configured = app.config.get("NAZZIL_SECRET_KEY")
    if configured:
        key = configured.encode() if isinstance(configured, str) else bytes(configured)
    elif settings.mode(app.config) != "serverless":
        key = _stored_key(app)
    if key is None:
        log.warning(
            "NAZZIL_SECRET_KEY is not set and cannot be stored: using a per-process key, "
            "so device cookies (and the jobs they own) are lost on restart"
        )
        key = secrets.token_bytes(32)
    cache["secret_key"] = key
    return key


def _stored_key(app: Flask) -> bytes | None:
    root = data_dir(app)
    if root is None:
        return None
    path = root / "secret_key"
    try:
        if path.exists():
            key = path.read_bytes().strip()
            if len(key) >= 32:
                return key
        key = secrets.token_hex(32).encode()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(key)
        return key
    except OSError as exc:
        log.warning("cannot keep the secret key in %s: %s", path, exc)
        return None
