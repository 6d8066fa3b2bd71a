"""A small in-process cache whose entries expire (previews are asked for again and again)."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from typing import Any


class TTLCache:
    """A small thread-safe LRU cache whose entries expire."""

    def __init__(self, size: int, ttl: float):
        self.size, self.ttl = size, ttl
        self._data: OrderedDict[str, tuple[float, Any]] = OrderedDict()
        self._lock = threading.Lock()

    @classmethod
    def for_previews(cls, config: Any) -> TTLCache:
        """A cache sized and timed by NAZZIL_PREVIEW_CACHE_SIZE and NAZZIL_PREVIEW_CACHE_TTL."""
        size, ttl = config["NAZZIL_PREVIEW_CACHE_SIZE"], config["NAZZIL_PREVIEW_CACHE_TTL"]
        return cls(int(size), float(ttl))

    def get(self, key: str) -> Any:
        """Return a fresh value or None."""
        with self._lock:
            item = self._data.get(key)
            if item is None:
                return None
            if item[0] < time.monotonic():
                del self._data[key]
                return None
            self._data.move_to_end(key)
            return item[1]

    def put(self, key: str, value: Any) -> None:
        """Remember a value."""
        if self.ttl <= 0 or self.size <= 0:
            return
        with self._lock:
            self._data[key] = (time.monotonic() + self.ttl, value)
            self._data.move_to_end(key)
            while len(self._data) > self.size:
                self._data.popitem(last=False)

    def pop(self, key: str) -> None:
        """Forget a value."""
        with self._lock:
            self._data.pop(key, None)
