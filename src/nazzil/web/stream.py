"""GET /api/v1/stream: the media streamed as it is fetched, merged or converted on the fly."""

from __future__ import annotations

import time

from flask import Blueprint, Response, current_app, request

from .. import netguard
from ..errors import InvalidRequest
from ..formats import choose

bp = Blueprint("stream", __name__)


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
    info = extract.resolve(url, choice.selector, config, policy)
    result = stream.open_stream(
        info,
        choice,
        stream.Options.from_config(config, policy),
        client_range=request.headers.get("Range"),
        if_range=request.headers.get("If-Range"),
        # waitress sets this when channel_request_lookahead > 0 (see cli.py serve).
        disconnected=request.environ.get("waitress.client_disconnected"),
    )
    current_app.logger.info(
        "stream %s: %s ready in %.0f ms",
        choice.format,
        result.headers.get("Content-Type"),
        (time.perf_counter() - started) * 1000,
    )
    return Response(
        result.body, status=result.status, headers=result.headers, direct_passthrough=True
    )
