"""GET /api/v1/stream: the media streamed as it is fetched, merged or converted on the fly."""

from __future__ import annotations

import time
from typing import Any

from flask import Blueprint, Flask, Response, current_app, request

from .. import netguard
from ..cache import TTLCache
from ..errors import InvalidRequest, UpstreamError, UpstreamTimeout
from ..formats import choose
from ..server import client_gone
from ..state import once

bp = Blueprint("stream", __name__)


def _resolved(app: Flask) -> TTLCache:
    # What a URL resolved to, for a while: a player's Range requests, a resumed download or
    # a second device would otherwise each pay a whole extraction before the first byte.
    return once(app, "resolve_cache", lambda: TTLCache.for_previews(app.config))


@bp.get("/api/v1/stream")
def download() -> Response:
    """Stream a URL's media in the chosen format; nothing is kept on the server."""
    # The engines are only needed once a stream starts: cheap cold starts.
    from .. import extract, stream

    args = request.args
    url = args.get("url")
    if url is None:
        raise InvalidRequest("The query parameter 'url' is required.")
    choice = choose(args.get("format") or "best", args.get("audio_format") or None)
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    config = app.config
    policy = netguard.policy_for(app)
    url = netguard.precheck(url, policy, int(config["NAZZIL_MAX_URL_LENGTH"]))
    started = time.perf_counter()
    cache, key = _resolved(app), f"{choice.selector}\n{url}"
    info: Any = cache.get(key)
    cached = info is not None

    def start(info: Any) -> Any:
        return stream.open_stream(
            info,
            choice,
            stream.Options.from_config(config, policy),
            client_range=request.headers.get("Range"),
            if_range=request.headers.get("If-Range"),
            disconnected=client_gone(request.environ),
        )

    if not cached:
        info = extract.resolve(url, choice.selector, config, policy)
    try:
        result = start(info)
    except (UpstreamError, UpstreamTimeout):
        if not cached:
            raise
        # The site may have moved on (signed links expire): ask it afresh, once.
        cache.pop(key)
        info, cached = extract.resolve(url, choice.selector, config, policy), False
        result = start(info)
    cache.put(key, info)
    current_app.logger.info(
        "stream %s: %s ready in %.0f ms%s",
        choice.format,
        result.headers.get("Content-Type"),
        (time.perf_counter() - started) * 1000,
        " (formats remembered)" if cached else "",
    )
    return Response(
        result.body, status=result.status, headers=result.headers, direct_passthrough=True
    )
