"""English and Arabic: choice of language, right-to-left, and complete, compiled catalogs."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from babel.messages.extract import DEFAULT_KEYWORDS, extract_from_dir
from babel.messages.mofile import read_mo
from babel.messages.pofile import read_po

import nazzil
from nazzil import errors, i18n

PACKAGE = Path(nazzil.__file__).parent
TRANSLATIONS = PACKAGE / "translations"
ARABIC = re.compile(r"[\u0600-\u06ff]")


def html_of(response) -> str:  # noqa: ANN001
    """The body of a page response."""
    assert response.status_code == 200
    return response.get_data(as_text=True)


def source_messages() -> set[str]:
    """Extract every translatable string from the code and templates, as pybabel does."""
    method_map = [("**.py", "python"), ("templates/**.html", "jinja2.ext:babel_extract")]
    keywords = {**DEFAULT_KEYWORDS, "lazy_gettext": None}
    found = set()
    for _file, _line, message, _comments, _context in extract_from_dir(
        str(PACKAGE), method_map=method_map, keywords=keywords
    ):
        found.add(message if isinstance(message, str) else message[0])
    return found


def catalog(lang: str):  # noqa: ANN201
    """Read a language's .po catalog."""
    with (TRANSLATIONS / lang / "LC_MESSAGES" / "messages.po").open("rb") as fh:
        return read_po(fh, locale=lang)


def placeholders(text: str) -> set[str]:
    """The {name} and %(name)s placeholders of a message."""
    return set(re.findall(r"\{\w+\}|%\(\w+\)s", text))


@pytest.mark.parametrize("header", ["ar", "ar-EG,ar;q=0.9,en;q=0.5", "ar-SA"])
def test_arabic_browser_gets_an_arabic_rtl_page(client, header) -> None:
    response = client.get("/", headers={"Accept-Language": header})
    html = html_of(response)
    assert '<html lang="ar" dir="rtl">' in html
    assert "احفظ فيديو من رابط" in html and "معاينة" in html
    assert response.headers["Content-Language"] == "ar"
    assert "Accept-Language" in response.headers["Vary"]
    strings = json.loads(re.search(r'id="i18n">(.*?)</script>', html, re.S).group(1))
    assert strings["errors"]["unsupported_url"] == "لم يُعثر على فيديو في هذا الرابط."
    assert all(ARABIC.search(text) for text in strings["errors"].values())


@pytest.mark.parametrize("header", [None, "en-US,en;q=0.9", "fr, de;q=0.5", "*"])
def test_other_browsers_get_english(client, header) -> None:
    headers = {"Accept-Language": header} if header else {}
    html = html_of(client.get("/", headers=headers))
    assert '<html lang="en" dir="ltr">' in html and "Save a video from a link" in html


def test_switch_is_remembered_in_a_cookie(client) -> None:
    english = {"Accept-Language": "en"}
    first = client.get("/?lang=ar", headers=english)
    assert 'dir="rtl"' in html_of(first)
    cookie = first.headers["Set-Cookie"]
    assert cookie.startswith("nazzil_lang=ar;") and "SameSite=Lax" in cookie
    assert 'dir="rtl"' in html_of(client.get("/", headers=english)), "remembered"
    back = client.get("/?lang=en", headers={"Accept-Language": "ar"})
    assert 'dir="ltr"' in html_of(back) and "nazzil_lang=en" in back.headers["Set-Cookie"]
    assert 'dir="ltr"' in html_of(client.get("/", headers={"Accept-Language": "ar"}))


def test_unknown_language_is_ignored(client) -> None:
    response = client.get("/?lang=xx", headers={"Accept-Language": "ar"})
    assert 'dir="rtl"' in html_of(response)
    assert "nazzil_lang" not in response.headers.get("Set-Cookie", "")


def test_switch_link_points_to_the_other_language_and_keeps_the_link(client) -> None:
    html = html_of(client.get("/?url=not-a-link", headers={"Accept-Language": "ar"}))
    link = re.search(r'<a href="([^"]+)" lang="en" hreflang="en"[^>]*>English</a>', html)
    assert link and "lang=en" in link.group(1) and "url=not-a-link" in link.group(1)
    html = html_of(client.get("/", headers={"Accept-Language": "en"}))
    assert re.search(r'<a href="/\?lang=ar" lang="ar"[^>]*>العربية</a>', html)


def test_error_page_is_translated(client) -> None:
    response = client.get("/nowhere", headers={"Accept-Language": "ar", "Accept": "text/html"})
    assert response.status_code == 404
    html = response.get_data(as_text=True)
    assert 'dir="rtl"' in html and "لم يُعثر على ذلك" in html and "العودة إلى نزّل" in html


def test_preview_error_is_translated(client) -> None:
    html = html_of(client.get("/?url=nope", headers={"Accept-Language": "ar"}))
    assert "لا يبدو هذا رابط ويب" in html


def test_api_errors_stay_english(client) -> None:
    body = client.post(
        "/api/v1/info", json={"url": "nope"}, headers={"Accept-Language": "ar"}
    ).get_json()
    assert not ARABIC.search(body["error"]["message"])


def test_every_error_code_has_a_sentence() -> None:
    codes = {
        cls.code
        for cls in vars(errors).values()
        if isinstance(cls, type) and issubclass(cls, errors.NazzilError)
    }
    codes |= set(errors.CODE_BY_STATUS.values())
    missing = codes - set(i18n.ERRORS)
    assert not missing, f"no friendly sentence for {sorted(missing)}"


def test_every_message_is_translated_to_arabic() -> None:
    ar = catalog("ar")
    messages = source_messages()
    assert len(messages) > 50
    missing, fuzzy, broken = [], [], []
    for msgid in sorted(messages):
        entry = ar.get(msgid)
        if entry is None or not entry.string:
            missing.append(msgid)
        elif entry.fuzzy:
            fuzzy.append(msgid)
        elif placeholders(entry.string) != placeholders(msgid):
            broken.append(msgid)
    assert not missing, f"Arabic translation missing for: {missing}"
    assert not fuzzy, f"fuzzy Arabic translations: {fuzzy}"
    assert not broken, f"placeholders differ in: {broken}"


def test_template_is_up_to_date() -> None:
    with (TRANSLATIONS / "messages.pot").open("rb") as fh:
        pot = {m.id for m in read_po(fh) if m.id}
    assert source_messages() <= pot, "run pybabel extract (see nazzil/i18n.py)"


def test_arabic_uses_arabic_punctuation() -> None:
    for message in catalog("ar"):
        if message.id:
            # A Latin comma, semicolon or question mark right after an Arabic letter.
            assert not re.search(r"[\u0600-\u06ff][,;?]", message.string), message.string


@pytest.mark.parametrize("lang", ["en", "ar"])
def test_compiled_catalogs_match_their_sources(lang) -> None:
    po = {m.id: m.string for m in catalog(lang) if m.id and m.string and not m.fuzzy}
    with (TRANSLATIONS / lang / "LC_MESSAGES" / "messages.mo").open("rb") as fh:
        mo = {m.id: m.string for m in read_mo(fh) if m.id}
    assert mo == po, "run pybabel compile -d src/nazzil/translations"
