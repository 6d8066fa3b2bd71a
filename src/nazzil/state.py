"""The app's long-lived objects (engine, queue, storage, ...), each made once on first use."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, TypeVar

from flask import Flask

T = TypeVar("T")

# Re-entrant: making one object may need another (the queue needs the data directory).
_lock = threading.RLock()


def once(app: Flask, key: str, make: Callable[[], T]) -> T:
    """Return app.extensions["nazzil"][key], calling make() the first time it is asked for."""
    cache: dict[str, Any] = app.extensions.setdefault("nazzil", {})
    if key in cache:
        return cache[key]
    with _lock:
        if key not in cache:
            cache[key] = make()
    return cache[key]
