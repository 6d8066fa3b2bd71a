"""Access tokens for exposed instances: Bearer on the API, a signed cookie for the page."""

from __future__ import annotations

import hashlib
import hmac
import logging
from collections.abc import Iterable
from urllib.parse import urlsplit

from flask import (
    Blueprint,
    Flask,
    Response,
    current_app,
    g,
    redirect,
    render_template,
    request,
    url_for,
)
from itsdangerous import BadSignature, URLSafeTimedSerializer

from .datadir import secret_key
from .errors import Forbidden, Unauthorized

log = logging.getLogger("nazzil.auth")  # "nazzil.access" is the access log

COOKIE = "nazzil_access"
MAX_AGE = 30 * 86400
# Reachable without a token: health checks, the login form and what it needs to render.
OPEN_PATHS = frozenset({"/healthz", "/readyz", "/login", "/logout", "/manifest.webmanifest"})
OPEN_PREFIXES = ("/static/",)
CHALLENGE = 'Bearer realm="nazzil"'
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")

bp = Blueprint("access", __name__)


def hash_token(token: str) -> bytes:
    """Return the SHA-256 digest of a token (only digests are kept in memory)."""
    return hashlib.sha256(token.encode("utf-8")).digest()


def parse_tokens(entries: Iterable[str]) -> tuple[bytes, ...]:
    """Turn ACCESS_TOKENS entries (tokens or sha256:<hex>) into digests."""
    digests = []
    for entry in entries:
        entry = entry.strip()
        if not entry:
            continue
        if entry.lower().startswith("sha256:"):
            try:
                digest = bytes.fromhex(entry[7:])
            except ValueError:
                digest = b""
            if len(digest) != 32:
                raise ValueError("NAZZIL_ACCESS_TOKENS: sha256: needs 64 hex digits")
            digests.append(digest)
        else:
            digests.append(hash_token(entry))
    return tuple(digests)


def _digests() -> tuple[bytes, ...]:
    return current_app.extensions["nazzil"].get("access_digests", ())


def enabled() -> bool:
    """Tell whether this instance requires a token."""
    return bool(_digests())


def token_matches(token: str) -> bytes | None:
    """Return the configured digest a token matches, comparing in constant time."""
    digest = hash_token(token)
    found = None
    for known in _digests():
        # No early exit: every configured digest is compared.
        if hmac.compare_digest(digest, known):
            found = known
    return found


def _cookie_id(digest: bytes) -> str:
    # The cookie names the token by a value derived from its digest, never the token itself.
    return hashlib.sha256(b"nazzil-access:" + digest).hexdigest()


def _serializer() -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(secret_key(current_app), salt="nazzil-access")


def _cookie_ok() -> bool:
    raw = request.cookies.get(COOKIE)
    if not raw:
        return False
    try:
        value = _serializer().loads(raw, max_age=MAX_AGE)
    except BadSignature:
        return False
    if not isinstance(value, str):
        return False
    ok = False
    for known in _digests():
        if hmac.compare_digest(value, _cookie_id(known)):
            ok = True
    return ok


def _bearer() -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def _is_open(path: str) -> bool:
    return path in OPEN_PATHS or path.startswith(OPEN_PREFIXES)


def _require_token() -> Response | None:
    """Refuse requests without a valid token (header or cookie) when tokens are configured."""
    if not enabled() or _is_open(request.path):
        return None
    token = _bearer()
    if token is not None:
        if token_matches(token) is not None:
            g.access = "bearer"
            return None
        raise Unauthorized(
            "The access token is not valid.",
            headers={"WWW-Authenticate": f'{CHALLENGE}, error="invalid_token"'},
        )
    if _cookie_ok():
        if request.method not in SAFE_METHODS and not same_origin():
            # A cookie rides along with cross-site requests; a Bearer header never does.
            raise Forbidden("Requests from other sites are not accepted.")
        g.access = "cookie"
        return None
    from .app import wants_json

    navigating = request.headers.get("Sec-Fetch-Mode", "navigate") == "navigate"
    if wants_json() or request.method not in SAFE_METHODS or not navigating:
        raise Unauthorized(headers={"WWW-Authenticate": CHALLENGE})
    return redirect(url_for("access.login", next=request.full_path.rstrip("?")), code=303)


def same_origin() -> bool:
    """Tell whether a browser request comes from nazzil's own pages (no Origin: not a browser)."""
    origin = request.headers.get("Origin")
    fetch_site = request.headers.get("Sec-Fetch-Site")
    # Under nazzil's own "Referrer-Policy: no-referrer" a browser sends "Origin: null" with the
    # page's POSTs; its Sec-Fetch-Site (which no page can forge) still tells where they come from.
    if origin is None or (origin == "null" and fetch_site):
        return (fetch_site or "same-origin") in ("same-origin", "none")
    parts = urlsplit(origin)
    return parts.scheme == request.scheme and parts.netloc.lower() == request.host.lower()


def safe_next(target: str | None) -> str:
    """Return a local path to go to after login; anything else becomes the home page."""
    if not target or not target.startswith("/") or target.startswith(("//", "/\\")):
        return "/"
    if any(ord(c) < 0x20 or c == "\\" for c in target):
        return "/"
    parts = urlsplit(target)
    if parts.scheme or parts.netloc:
        return "/"
    return target


@bp.route("/login", methods=["GET", "POST"])
def login() -> Response | tuple[str, int] | str:
    """Ask for an access token once and keep it, signed, in an HttpOnly cookie."""
    next_path = safe_next(request.values.get("next"))
    if not enabled():
        return redirect(next_path, code=303)
    if request.method == "GET":
        return render_template("login.html", next=next_path, failed=False)
    if not same_origin():
        raise Forbidden("Requests from other sites are not accepted.")
    token = request.form.get("token", "")
    digest = token_matches(token.strip()) if token.strip() else None
    if digest is None:
        log.info("login refused")
        return render_template("login.html", next=next_path, failed=True), 401
    response = redirect(next_path, code=303)
    response.set_cookie(
        COOKIE,
        _serializer().dumps(_cookie_id(digest)),
        max_age=MAX_AGE,
        httponly=True,
        samesite="Lax",
        secure=request.is_secure,
    )
    return response


@bp.post("/logout")
def logout() -> Response:
    """Forget the access cookie."""
    response = redirect(url_for("access.login"), code=303)
    response.delete_cookie(COOKIE, httponly=True, samesite="Lax", secure=request.is_secure)
    return response


def init_app(app: Flask) -> None:
    """Hash the configured tokens (the plain ones are dropped) and guard every request."""
    digests = parse_tokens(app.config.get("NAZZIL_ACCESS_TOKENS") or ())
    app.extensions["nazzil"]["access_digests"] = digests
    # Keep only digests in the config too, so a config dump shows no token.
    app.config["NAZZIL_ACCESS_TOKENS"] = tuple(f"sha256:{d.hex()}" for d in digests)
    app.before_request(_require_token)
    app.register_blueprint(bp)
