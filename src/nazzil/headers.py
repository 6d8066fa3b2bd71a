"""Browser safety headers on every answer: CSP without inline script, no sniffing, no referrer."""

from __future__ import annotations

from flask import Flask, Response, request

# Thumbnails come straight from the sites (any http/https host); media plays from our own
# endpoints or from blob: URLs; nothing may frame the page or retarget its forms and links.
CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data: http: https:",
        "media-src 'self' blob:",
        "connect-src 'self'",
        "font-src 'self'",
        "manifest-src 'self'",
        "worker-src 'self'",
        "object-src 'none'",
        "frame-src 'none'",
        "frame-ancestors 'none'",
        "base-uri 'none'",
        "form-action 'self'",
    )
)

HEADERS: dict[str, str] = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=(), payment=(), usb=()",
}


def _secure_cookies(response: Response) -> None:
    """Mark every cookie Secure when the request came over https (directly or via a proxy)."""
    cookies = response.headers.getlist("Set-Cookie")
    if not cookies:
        return
    fixed = [
        c if any(p.strip().lower() == "secure" for p in c.split(";")[1:]) else c + "; Secure"
        for c in cookies
    ]
    if fixed != cookies:
        response.headers.remove("Set-Cookie")
        for cookie in fixed:
            response.headers.add("Set-Cookie", cookie)


def add_headers(response: Response) -> Response:
    """Set the safety headers an answer does not set itself."""
    for name, value in HEADERS.items():
        response.headers.setdefault(name, value)
    if request.is_secure:
        _secure_cookies(response)
    return response


def init_app(app: Flask) -> None:
    """Add the headers to every response, error pages included."""
    # after_request hooks run last-registered first: put this one first so it runs last and
    # sees every cookie that other hooks (device, language, access) have set.
    app.after_request_funcs.setdefault(None, []).insert(0, add_headers)
