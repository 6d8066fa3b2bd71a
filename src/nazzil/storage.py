"""Where finished files live: DATA_DIR/files on local disk, or an S3-compatible bucket."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import secrets
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

from flask import Flask, Response, redirect, request, send_file
from werkzeug.http import parse_range_header

from .datadir import data_dir
from .errors import JobsDisabled, NotFound, RangeNotSatisfiable
from .names import content_disposition
from .state import once

log = logging.getLogger(__name__)
_EMPTY_SUFFIX = re.compile(r"\s*bytes\s*=\s*-\s*0+\s*", re.IGNORECASE)


class Storage(Protocol):
    """What the job system needs from a file store."""

    def put(self, src: Path, name: str, job_id: str) -> str:
        """Move a finished file in under a unique name; return its key."""

    def delete(self, key: str) -> None:
        """Remove a stored file (missing is fine)."""

    def send(self, key: str, name: str, content_type: str) -> Response:
        """Answer a download request for a stored file (Range supported)."""

    def check(self) -> None:
        """Raise when the store does not answer."""

    def orphans(self, known: set[str], older_than: float) -> Iterator[str]:
        """Yield keys of stored files no job refers to, older than some seconds."""


def _numbered(name: str) -> Iterator[str]:
    stem, dot, ext = name.rpartition(".")
    if not dot:
        stem, ext = name, ""
    suffix = f".{ext}" if dot else ""
    yield name
    for n in range(2, 100):
        yield f"{stem} ({n}){suffix}"
    yield f"{stem} {secrets.token_hex(4)}{suffix}"


def _check_range(size: int) -> None:
    """Ignore a Range header we do not serve; refuse an unsatisfiable one with its size."""
    header = request.headers.get("Range")
    if not header or "If-Range" in request.headers:
        return  # werkzeug weighs If-Range itself (a stale validator means the whole file)
    if _EMPTY_SUFFIX.fullmatch(header):
        # "bytes=-0" is well formed but asks for the last 0 bytes: never satisfiable.
        raise RangeNotSatisfiable(headers={"Content-Range": f"bytes */{size}"})
    parsed = parse_range_header(header)
    if parsed is None or parsed.units != "bytes" or len(parsed.ranges) != 1:
        # RFC 9110 lets a server ignore a Range it does not support (malformed, or several
        # ranges): the whole file with 200 serves the client better than a 416.
        request.environ.pop("HTTP_RANGE", None)
        return
    if size and parsed.range_for_length(size) is None:
        raise RangeNotSatisfiable(headers={"Content-Range": f"bytes */{size}"})


class LocalStorage:
    """Files in one directory, named after their titles, made unique with ' (2)' suffixes."""

    def __init__(self, root: Path):
        self.root = Path(root)

    def put(self, src: Path, name: str, job_id: str) -> str:
        """Move src in as name (or a numbered variant of it); return the key (the file name)."""
        self.root.mkdir(parents=True, exist_ok=True)
        for candidate in _numbered(name):
            dest = self.root / candidate
            try:
                # Claiming the name atomically keeps two workers from picking the same one.
                fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                continue
            os.close(fd)
            try:
                os.replace(src, dest)
            except OSError:
                shutil.copyfile(src, dest)
                src.unlink(missing_ok=True)
            return candidate
        raise FileExistsError(name)

    def path(self, key: str) -> Path:
        """Return the local path of a key, refusing anything outside the files directory."""
        if not key or "/" in key or "\\" in key or key in (".", "..") or "\x00" in key:
            raise NotFound("The file is gone.")
        path = self.root / key
        if path.resolve().parent != self.root.resolve():
            raise NotFound("The file is gone.")
        return path

    def delete(self, key: str) -> None:
        """Remove a stored file."""
        with contextlib.suppress(NotFound):
            self.path(key).unlink(missing_ok=True)

    def send(self, key: str, name: str, content_type: str) -> Response:
        """Send the file with Range support and an RFC 6266 Content-Disposition."""
        path = self.path(key)
        if not path.is_file():
            raise NotFound("The file is gone; it may have expired.")
        _check_range(path.stat().st_size)
        response = send_file(path, mimetype=content_type, conditional=True, etag=True, max_age=0)
        response.headers["Content-Disposition"] = content_disposition(name)
        return response

    def check(self) -> None:
        """Raise unless the files directory is writable."""
        self.root.mkdir(parents=True, exist_ok=True)
        if not os.access(self.root, os.W_OK):
            raise OSError(f"{self.root} is not writable")

    def orphans(self, known: set[str], older_than: float) -> Iterator[str]:
        """Yield names of files no job refers to (e.g. a worker died right after moving one)."""
        if not self.root.is_dir():
            return
        cutoff = time.time() - older_than
        for entry in os.scandir(self.root):
            if entry.name not in known and entry.is_file() and entry.stat().st_mtime < cutoff:
                yield entry.name


class S3Storage:
    """Files in an S3-compatible bucket under a prefix; downloads redirect to signed URLs."""

    def __init__(self, url: str):
        parts = urlsplit(url)
        self.bucket = parts.netloc
        self.prefix = parts.path.strip("/")
        self._client: Any = None

    @property
    def client(self) -> Any:
        """The boto3 client, created on first use (credentials from the usual AWS_* sources)."""
        if self._client is None:
            import boto3

            self._client = boto3.client(
                "s3", endpoint_url=os.environ.get("AWS_ENDPOINT_URL_S3") or None
            )
        return self._client

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def put(self, src: Path, name: str, job_id: str) -> str:
        """Upload src as <job id>/<name>; the job id keeps keys unique."""
        key = f"{job_id}/{name}"
        self.client.upload_file(str(src), self.bucket, self._key(key))
        src.unlink(missing_ok=True)
        return key

    def delete(self, key: str) -> None:
        """Remove a stored object."""
        self.client.delete_object(Bucket=self.bucket, Key=self._key(key))

    def send(self, key: str, name: str, content_type: str) -> Response:
        """Redirect to a short-lived signed URL that answers Range and names the file."""
        url = self.client.generate_presigned_url(
            "get_object",
            Params={
                "Bucket": self.bucket,
                "Key": self._key(key),
                "ResponseContentDisposition": content_disposition(name),
                "ResponseContentType": content_type,
            },
            ExpiresIn=3600,
        )
        return redirect(url, code=302)

    def check(self) -> None:
        """Raise unless the bucket answers."""
        self.client.head_bucket(Bucket=self.bucket)

    def orphans(self, known: set[str], older_than: float) -> Iterator[str]:
        """Orphans in a bucket are left to its lifecycle rules."""
        return iter(())


def get_storage(app: Flask) -> Storage:
    """Return the app's file store, made on first use."""
    return once(app, "storage", lambda: _make_storage(app))


def _make_storage(app: Flask) -> Storage:
    url = str(app.config.get("NAZZIL_STORAGE_URL") or "")
    if url.startswith("s3://"):
        return S3Storage(url)
    if url:
        raise JobsDisabled("NAZZIL_STORAGE_URL must be empty or s3://bucket/prefix.")
    root = data_dir(app)
    if root is None:
        raise JobsDisabled("Jobs need a writable data directory.")
    return LocalStorage(root / "files")


def work_root(app: Flask) -> Path:
    """Return the directory where downloads in progress are written."""
    root = data_dir(app)
    if root is None:
        raise JobsDisabled("Jobs need a writable data directory.")
    return root / "tmp"
