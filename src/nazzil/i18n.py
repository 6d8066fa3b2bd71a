"""Languages of the page: Flask-Babel setup, the locale choice and its cookie, friendly errors.

Flask-Babel (and Babel's locale data) is loaded by the first request in a language other than
English, not when the app is created: it costs about a tenth of a serverless cold start, and
English, the language of the msgids, needs no catalog.

Catalogs live in translations/ (the compiled .mo files are committed, so an installed package
needs no compile step); docs/translations.md has the pybabel commands. Numbers (durations,
sizes, percentages) use Western digits in every language: they match what people type into
the trim fields and what sites show next to their players.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from flask import Flask, Response, current_app, g, has_request_context, request

from .state import once

SOURCE_LANGUAGE = "en"  # the msgids are English: an English page needs no catalog


def _translations() -> Any:
    """Flask-Babel's catalog for this request, or None in English (the msgids' language)."""
    if current_language() == SOURCE_LANGUAGE:
        return None
    _install_babel()
    from flask_babel import get_translations

    return get_translations()


def gettext(message: str, **variables: Any) -> str:
    """Translate a message into the request's language (Flask-Babel, imported when needed)."""
    text = _template_gettext(message)
    return text % variables if variables else text


def _template_gettext(message: str) -> str:
    # Jinja's newstyle gettext formats and escapes the result itself.
    catalog = _translations()
    return catalog.ugettext(message) if catalog is not None else message


def _template_ngettext(singular: str, plural: str, n: int) -> str:
    catalog = _translations()
    if catalog is None:
        return singular if n == 1 else plural
    return catalog.ungettext(singular, plural, n)


_ = gettext


class lazy_gettext:  # noqa: N801 - named like Flask-Babel's, the keyword pybabel extracts
    """A message translated when it is shown, in the language of that request."""

    def __init__(self, message: str):
        self.message = message

    def __str__(self) -> str:
        return gettext(self.message)


LANGUAGES: dict[str, str] = {"en": "English", "ar": "العربية"}
RTL = frozenset({"ar"})
COOKIE = "nazzil_lang"
COOKIE_MAX_AGE = 400 * 86400  # browsers cap cookie lifetime at 400 days

# One sentence per API error code, for people; the API's own messages stay English.
ERRORS: dict[str, Any] = {
    "invalid_request": lazy_gettext(
        "Something about that request was not right. Please try again."
    ),
    "invalid_url": lazy_gettext(
        "That does not look like a web link. Paste a link that starts with http:// or https://."
    ),
    "blocked_address": lazy_gettext(
        "That link points into a private network, which nazzil is not allowed to open."
    ),
    "unauthorized": lazy_gettext("This nazzil needs an access token. Sign in and try again."),
    "forbidden": lazy_gettext("You are not allowed to do that."),
    "not_found": lazy_gettext("That could not be found. It may have been deleted."),
    "method_not_allowed": lazy_gettext("That action is not possible here."),
    "conflict": lazy_gettext("That cannot be done right now; the download has already moved on."),
    "payload_too_large": lazy_gettext("That request is too large."),
    "unsupported_url": lazy_gettext("No video was found at that link."),
    "format_unavailable": lazy_gettext(
        "That quality is not available for this video. Choose another one."
    ),
    "too_large": lazy_gettext("This video is larger than this server allows."),
    "too_long": lazy_gettext("This video is longer than this server allows."),
    "rate_limited": lazy_gettext("Too many requests at once. Wait a moment, then try again."),
    "upstream_error": lazy_gettext(
        "The site of that link answered with an error. Try again later."
    ),
    "upstream_timeout": lazy_gettext(
        "The site of that link did not answer in time. Try again later."
    ),
    "jobs_disabled": lazy_gettext(
        "This server does not keep downloads; use the direct download instead."
    ),
    "insufficient_storage": lazy_gettext(
        "The server is short of disk space right now. Try again later."
    ),
    "unavailable": lazy_gettext("nazzil is not ready right now. Try again in a minute."),
    "range_not_satisfiable": lazy_gettext("That part of the file does not exist."),
    "internal_error": lazy_gettext("Something went wrong on our side. Please try again."),
    "network": lazy_gettext("Could not reach nazzil. Check your connection."),
}


def error_text(code: str | None, fallback: str | None = None) -> str:
    """Return the friendly, translated sentence for an error code."""
    if code in ERRORS:
        return str(ERRORS[code])
    return fallback or str(ERRORS["internal_error"])


def select_locale() -> str:
    """Choose the language: ?lang=, then the remembered cookie, then Accept-Language."""
    asked = request.args.get("lang", "")
    if asked in LANGUAGES:
        g.lang_chosen = asked
        return asked
    remembered = request.cookies.get(COOKIE, "")
    if remembered in LANGUAGES:
        return remembered
    return request.accept_languages.best_match(list(LANGUAGES)) or "en"


def current_language() -> str:
    """Return the language code of this request ("en" or "ar")."""
    if not has_request_context():
        return SOURCE_LANGUAGE
    if "lang" not in g:
        g.lang = select_locale()
    return g.lang


def js_strings() -> dict[str, Any]:
    """Collect the translated strings app.js shows, rendered into the page as JSON."""
    return {
        "errors": {code: str(text) for code, text in ERRORS.items()},
        "status": {
            "queued": _("Waiting to start…"),
            "running": _("Downloading…"),
            "finished": _("Ready"),
            "failed": _("Failed"),
            "cancelled": _("Cancelled"),
        },
        "looking": _("Looking for the video…"),
        "found": _("Found: {title}"),
        "progress_label": _("Download progress"),
        "starting": _("Starting the download…"),
        "percent": _("{percent}%"),
        "of": _("{done} of {total}"),
        "left": _("{time} left"),
        "done": _("Done. Your file is ready to save."),
        "save": _("Save"),
        "cancel": _("Cancel"),
        "retry": _("Retry"),
        "delete": _("Delete"),
        "untitled": _("Untitled"),
        "format_best": _("Best"),
        "format_audio": _("Audio only"),
        "paste_denied": _("nazzil may not read the clipboard. Paste the link into the box."),
        "no_link": _("The clipboard holds no link."),
        "trim_invalid": _("Write times as minutes:seconds, for example 1:30."),
        "trim_order": _("The end must come after the start."),
        "trim_long": _("The video is only {duration} long."),
        "stream_started": _("Your download starts in a moment."),
        "units": {"B": _("B"), "KB": _("KB"), "MB": _("MB"), "GB": _("GB")},
    }


def _remember_choice(response: Response) -> Response:
    chosen = g.get("lang_chosen")
    if chosen and request.cookies.get(COOKIE) != chosen:
        response.set_cookie(
            COOKIE, chosen, max_age=COOKIE_MAX_AGE, samesite="Lax", secure=request.is_secure
        )
    if response.mimetype == "text/html":
        response.headers["Content-Language"] = current_language()
        response.vary.update(("Accept-Language", "Cookie"))
    return response


def language_url(code: str) -> str:
    """Return this page's address in another language (its query kept, lang replaced)."""
    args = [(k, v) for k, v in request.args.items(multi=True) if k != "lang"]
    return request.path + "?" + urlencode([("lang", code), *args])


def _template_context() -> dict[str, Any]:
    language = current_language()
    return {
        "lang": language,
        "rtl": language in RTL,
        "languages": LANGUAGES,
        "error_text": error_text,
        "language_url": language_url,
    }


def _install_babel() -> None:
    """Install Flask-Babel on the first translated request (it configures the app and Jinja)."""
    app = current_app._get_current_object()  # type: ignore[attr-defined]

    def install() -> Any:
        from flask_babel import Babel

        return Babel(app, locale_selector=select_locale)

    once(app, "babel", install)


def init_app(app: Flask) -> None:
    """Set up translations (Flask-Babel on first need), the language cookie and template helpers."""
    # Templates get _() at once; Flask-Babel replaces these callables when it is installed.
    app.jinja_env.add_extension("jinja2.ext.i18n")
    app.jinja_env.install_gettext_callables(  # type: ignore[attr-defined]
        _template_gettext, _template_ngettext, newstyle=True
    )
    app.after_request(_remember_choice)
    app.context_processor(_template_context)
