"""The data directory and the secret key, found or created on first use with safe fallbacks."""

from __future__ import annotations

import logging
import os
import secrets
import tempfile
from pathlib import Path

from flask import Flask

from . import settings
from .state import once

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
    return once(app, "data_dir", lambda: _find_data_dir(app))


def _find_data_dir(app: Flask) -> Path | None:
    found: Path | None = None
    for path in _candidates(app):
        try:
            path.mkdir(parents=True, exist_ok=True)
            # A unique probe name: another process may be testing the same directory.
            with tempfile.NamedTemporaryFile(dir=path, prefix=".write-test-"):
                pass
            found = path
            break
        except OSError as exc:
            log.warning("data directory %s is not usable: %s", path, exc)
    if found is None:
        log.warning("no writable data directory: previews and streams still work, jobs do not")
    return found


def secret_key(app: Flask) -> bytes:
    """Return the key that signs cookies: configured, kept in the data dir, or per-process."""
    return once(app, "secret_key", lambda: _find_secret_key(app))


def _find_secret_key(app: Flask) -> bytes:
    configured = app.config.get("NAZZIL_SECRET_KEY")
    if configured:
        return configured.encode() if isinstance(configured, str) else bytes(configured)
    key = _stored_key(app) if settings.mode(app.config) != "serverless" else None
    if key is None:
        log.warning(
            "NAZZIL_SECRET_KEY is not set and cannot be stored: using a per-process key, "
            "so device cookies (and the jobs they own) are lost on restart"
        )
        key = secrets.token_bytes(32)
    return key


def _stored_key(app: Flask) -> bytes | None:
    root = data_dir(app)
    if root is None:
        return None
    path = root / "secret_key"
    try:
        if not path.exists():
            # Written aside and linked into place: link() fails if another process (a worker
            # starting at the same moment) got there first, and then its key is the one.
            with tempfile.NamedTemporaryFile(dir=root, prefix=".secret-", delete=False) as fh:
                fh.write(secrets.token_hex(32).encode())
            os.chmod(fh.name, 0o600)
            try:
                os.link(fh.name, path)
            except FileExistsError:
                pass
            finally:
                os.unlink(fh.name)
        key = path.read_bytes().strip()
        return key if len(key) >= 32 else None
    except OSError as exc:
        log.warning("cannot keep the secret key in %s: %s", path, exc)
        return None
