"""The page in a real browser: Debian's Chromium driven by Playwright against a live nazzil.

Screenshots go to artifacts/ (kept by CI). Skipped with a reason where Chromium or Playwright
is missing; CI installs both (.ci/run).
"""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.media import decode_ok, ffprobe_like
from tests.mediaserver import MediaServer, no_video_page, rss_feed, video_page
from tests.serve import NazzilServer

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parent.parent / "artifacts"
ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--disable-quic", "--no-first-run",
    # Chromium's own services (variations, safe browsing, DNS prefetch ...) must not reach
    # out: only 127.0.0.1 and localhost resolve, and no built-in DNS client runs.
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE 127.0.0.1",
    "--disable-features=AsyncDns,DnsOverHttps,NetworkPrediction,OptimizationHints,"
    "MediaRouter,Translate,AutofillServerCommunication,CertificateTransparencyComponentUpdater",
    "--disable-domain-reliability", "--disable-client-side-phishing-detection",
    "--no-pings", "--no-default-browser-check", "--disable-default-apps",
    "--metrics-recording-only", "--safebrowsing-disable-auto-update",
]  # fmt: skip
PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1280, "height": 860}
TIMEOUT_MS = 20_000

pytestmark = [pytest.mark.browser, pytest.mark.slow]

if not Path(CHROMIUM).exists():
    pytest.skip(
        f"Chromium is not installed at {CHROMIUM} (apt-get install chromium)",
        allow_module_level=True,
    )
sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright for Python is missing")
expect = sync_api.expect


def get_json(url: str) -> tuple[int, object]:
    """GET a URL from the live server and decode its JSON."""
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:  # noqa: S310 - 127.0.0.1 only
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, None


class Live(NazzilServer):
    """A `nazzil serve` subprocess on a free 127.0.0.1 port, trusting the media server."""

    def __init__(self, tmp: Path, media: MediaServer, **env: str) -> None:
        super().__init__(
            tmp,
            {
                "NAZZIL_SECRET_KEY": "browser-test-secret",
                "NAZZIL_TRUSTED_HOSTS": f"127.0.0.1:{media.port}",
                "NAZZIL_FETCH_TIMEOUT": "5",
                "NAZZIL_WORKERS": "2",
                "VERCEL": None,
                **env,
            },
        )
        self.start()

    def has_jobs(self) -> bool:
        """Tell whether the jobs API is served (it is built alongside this page)."""
        status, spec = get_json(self.base + "/api/v1/openapi.json")
        if status == 200 and isinstance(spec, dict) and "/api/v1/jobs" in spec.get("paths", {}):
            return True
        return get_json(self.base + "/api/v1/jobs")[0] == 200


@pytest.fixture(scope="module")
def pages(media_server: MediaServer) -> dict[str, str]:
    """The pages the browser previews, on the test media server."""
    s = media_server
    return {
        "hls": s.add_page(
            "/browser/hls.html",
            video_page("/hls/master.m3u8", "Sunrise «test»", poster="/thumb.jpg"),
        ),
        "mp4": s.add_page(
            "/browser/mp4.html", video_page("/sample.mp4", "نزهة في الحديقة", poster="/thumb.jpg")
        ),
        "slow": s.add_page("/browser/slow.html", video_page("/slow/sample.mp4", "A slow one")),
        "none": s.add_page("/browser/none.html", no_video_page("Just words")),
        "mixed": s.add_page(
            "/browser/mixed.html",
            video_page("/sample.mp4", "رحلة إلى Paris مع Anna في الصيف، الجزء الأول من السلسلة"),
        ),
        # Two videos; the second offers two files, so it has no single link of its own.
        "two_sources": s.add_page(
            "/browser/two-sources.html",
            "<!doctype html><html><head><title>Sources</title></head><body>"
            '<video><source src="/sample.mp4" type="video/mp4"></video>'
            '<video><source src="/moov_end.mp4" type="video/mp4">'
            '<source src="/video_only.mp4" type="video/mp4"></video></body></html>',
        ),
        "feed": s.add_page(
            "/browser/feed.xml",
            rss_feed(
                "Two clips",
                [
                    ("Sunrise «test»", s.url("/browser/hls.html")),
                    ("نزهة في الحديقة", s.url("/browser/mp4.html")),
                ],
            ),
            content_type="application/rss+xml",
        ),
    }


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory, media_server: MediaServer) -> Iterator[Live]:
    """A live nazzil in single-server mode."""
    server = Live(tmp_path_factory.mktemp("live"), media_server)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def jobs(live: Live) -> Live:
    """The live server, when it offers the jobs API (else the test is skipped)."""
    if not live.has_jobs():
        pytest.skip("the jobs API (/api/v1/jobs) is not served by this build yet")
    return live


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    """One headless Chromium for the module."""
    with sync_api.sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def open_page(browser, live: Live) -> Iterator:  # noqa: ANN001
    """Open a fresh browser context (own cookies = own device) and return its page."""
    contexts = []

    def opener(
        path: str = "/",
        *,
        viewport: dict | None = None,
        locale: str = "en-US",
        dark: bool = False,
        base: str | None = None,
    ):  # noqa: ANN202
        base = base or live.base
        context = browser.new_context(
            viewport=viewport or DESKTOP, locale=locale, accept_downloads=True,
            color_scheme="dark" if dark else "light", reduced_motion="reduce",
        )  # fmt: skip
        context.grant_permissions(["clipboard-read", "clipboard-write"], origin=base)
        context.set_default_timeout(TIMEOUT_MS)
        contexts.append(context)
        page = context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.js_errors = errors
        page.goto(base + path)
        return page

    yield opener
    for context in contexts:
        context.close()


def shot(page, name: str) -> None:  # noqa: ANN001
    """Keep a full-page screenshot as a CI artifact."""
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def no_sideways_scroll(page) -> None:  # noqa: ANN001
    """The layout fits the viewport's width."""
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= page.viewport_size["width"], f"page is {width}px wide"


def paste_link(page, url: str) -> None:  # noqa: ANN001
    """Put url on the clipboard and paste it into the link box with the keyboard."""
    page.evaluate("(text) => navigator.clipboard.writeText(text)", url)
    page.locator("#url").focus()
    page.keyboard.press("Control+V")


def save_file(page, card, tmp_path: Path) -> Path:  # noqa: ANN001
    """Click the card's Save link and keep the downloaded file."""
    with page.expect_download() as info:
        card.locator("a.save").click()
    download = info.value
    target = tmp_path / download.suggested_filename
    download.save_as(target)
    return target


def wait_finished(card) -> None:  # noqa: ANN001
    """Wait until the card's job reaches 100 % and offers Save."""
    bar = card.locator(".job .progress")
    expect(bar).to_have_attribute("aria-valuenow", "100", timeout=60_000)
    expect(card.locator(".job")).to_have_attribute("data-status", "finished")
    expect(card.locator("a.save")).to_be_visible()


# ----------------------------------------------------------------------------- tests


def test_paste_preview_choose_quality_and_save(open_page, jobs, pages, tmp_path) -> None:
    page = open_page("/", viewport=DESKTOP)
    expect(page.locator("#paste-btn")).to_be_visible()
    paste_link(page, pages["hls"])
    card = page.locator("article.preview")
    expect(card.locator(".title")).to_have_text("Sunrise «test»")
    assert page.url.endswith("?url=" + urllib.request.quote(pages["hls"], safe=""))
    expect(card.locator(".badge")).to_have_text("0:04")
    card.get_by_label("Quality").select_option("240p")
    expect(card.get_by_label("Audio format")).to_be_hidden()
    card.get_by_role("button", name="Download").click()
    progress = card.get_by_role("progressbar")
    expect(progress).to_be_visible()
    wait_finished(card)
    history = page.locator("#history")
    expect(history.locator("li")).to_have_count(1)
    expect(history.locator("li a.save")).to_be_visible()
    shot(page, "desktop-en-finished")
    saved = save_file(page, card, tmp_path)
    media = ffprobe_like(saved)
    assert media["video"] and media["audio"] and media["height"] == 240, media
    assert abs(media["duration"] - 4) < 0.5, media
    assert decode_ok(saved)
    assert not page.js_errors


def test_phone_paste_button_audio_only_with_trim(open_page, jobs, pages, tmp_path) -> None:
    page = open_page("/", viewport=PHONE)
    page.evaluate("(text) => navigator.clipboard.writeText(text)", "see " + pages["mp4"] + " !")
    page.get_by_role("button", name="Paste").click()
    card = page.locator("article.preview")
    expect(card.locator(".title")).to_have_text("نزهة في الحديقة")
    no_sideways_scroll(page)
    shot(page, "phone-en-preview")
    card.get_by_label("Quality").select_option("audio")
    card.get_by_label("Audio format").select_option("mp3")
    card.locator("details.trim summary").click()
    card.get_by_label("From", exact=True).fill("0:01")
    card.get_by_label("To", exact=True).fill("0:09")
    card.get_by_role("button", name="Download").click()
    expect(card.locator(".form-error")).to_contain_text("only 0:04 long")
    card.get_by_label("To", exact=True).fill("0:03")
    card.get_by_role("button", name="Download").click()
    wait_finished(card)
    no_sideways_scroll(page)
    shot(page, "phone-en-finished")
    saved = save_file(page, card, tmp_path)
    assert saved.suffix == ".mp3"
    media = ffprobe_like(saved)
    assert media["audio"] and not media["video"] and media["acodec"] == "mp3", media
    assert abs(media["duration"] - 2) < 0.6, media
    assert decode_ok(saved)
    assert not page.js_errors


def test_cancel_retry_and_delete(open_page, jobs, pages, media_server) -> None:
    page = open_page("/?url=" + urllib.request.quote(pages["slow"], safe=""))
    card = page.locator("article.preview")
    expect(card.locator(".title")).to_have_text("A slow one")
    rate = media_server.slow_rate
    media_server.slow_rate = 24_000  # slow enough to see the download under way...
    try:
        card.get_by_role("button", name="Download").click()
        job = card.locator(".job")
        progress = job.get_by_role("progressbar")
        expect(progress).to_have_attribute(
            "aria-valuenow", re.compile(r"^[1-9]\d*$"), timeout=30_000
        )
        media_server.slow_rate = 2_000  # ...and then slow enough to be still running at cancel
        expect(job).to_have_attribute("data-status", "running")
        expect(job.locator(".job-detail")).to_contain_text(" of ")
        shot(page, "desktop-en-running")
        job.get_by_role("button", name="Cancel").click()
        expect(job).to_have_attribute("data-status", "cancelled", timeout=15_000)
        expect(job.locator(".job-state")).to_have_text("Cancelled")
        expect(job.get_by_role("button", name="Retry")).to_be_visible()
        expect(job.locator("a.save")).to_be_hidden()
        shot(page, "desktop-en-cancelled")
    finally:
        media_server.slow_rate = rate
    item = page.locator("#history li")
    expect(item).to_have_count(1)
    expect(item.locator(".job")).to_have_attribute("data-status", "cancelled")
    item.get_by_role("button", name="Retry").click()
    expect(job).to_have_attribute("data-status", "finished", timeout=60_000)
    item.get_by_role("button", name="Delete").click()
    expect(page.locator("#history li")).to_have_count(0)
    expect(page.locator("#history")).to_be_hidden()
    assert not page.js_errors


def test_page_with_no_video_says_so(open_page, pages) -> None:
    page = open_page("/")
    expect(page.locator("ol.steps li")).to_have_count(3)
    shot(page, "desktop-en-home")
    page.locator("#url").fill(pages["none"])
    page.locator("#url").press("Enter")
    status = page.locator("#status")
    expect(status).to_have_text("No video was found at that link.")
    expect(page.locator("article.preview")).to_have_count(0)
    assert "unsupported_url" not in page.locator("main").inner_text()
    page.locator("#url").fill("http://10.1.2.3/video")
    page.get_by_role("button", name="Preview").click()
    expect(status).to_contain_text("private network")
    shot(page, "desktop-en-error")
    assert not page.js_errors


def test_playlist_pick_one_entry(open_page, live, pages, tmp_path) -> None:
    page = open_page("/", viewport=PHONE)
    page.locator("#url").fill(pages["feed"])
    page.locator("#url").press("Enter")
    cards = page.locator("article.preview")
    expect(cards).to_have_count(2)
    expect(page.locator(".playlist-title")).to_have_text("Two clips")
    expect(cards.nth(0).get_by_label("Quality").locator("option")).to_have_count(4)
    no_sideways_scroll(page)
    shot(page, "phone-en-playlist")
    if not live.has_jobs():
        pytest.skip("the jobs API (/api/v1/jobs) is not served by this build yet")
    second = cards.nth(1)
    expect(second.locator(".title")).to_have_text("نزهة في الحديقة")
    second.get_by_role("button", name="Download").click()
    wait_finished(second)
    expect(cards.nth(0).locator(".job")).to_have_count(0)
    saved = save_file(page, second, tmp_path)
    assert "نزهة" in saved.name, "the file is named after the chosen entry"
    media = ffprobe_like(saved)
    assert media["video"] and media["audio"] and media["height"] == 240, media
    assert not page.js_errors


def test_arabic_page_is_rtl_and_translated(open_page, live, pages) -> None:
    page = open_page(
        "/?url=" + urllib.request.quote(pages["hls"], safe=""), viewport=PHONE, locale="ar"
    )
    html = page.locator("html")
    expect(html).to_have_attribute("dir", "rtl")
    expect(html).to_have_attribute("lang", "ar")
    assert page.evaluate("getComputedStyle(document.body).direction") == "rtl"
    expect(page.locator("h1")).to_have_text("احفظ فيديو من رابط")
    card = page.locator("article.preview")
    expect(card.get_by_role("button", name="تنزيل")).to_be_visible()
    expect(card.get_by_label("الجودة")).to_be_visible()
    # Mirrored: the link box starts at the right edge; Paste comes before (right of) Preview.
    box = page.locator("#url").bounding_box()
    paste = page.get_by_role("button", name="لصق").bounding_box()
    preview = page.get_by_role("button", name="معاينة").bounding_box()
    assert abs(box["x"] + box["width"] - (PHONE["width"] - 16)) < 2, box
    assert paste["x"] > preview["x"]
    no_sideways_scroll(page)
    shot(page, "phone-ar-preview")
    if live.has_jobs():
        card.get_by_role("button", name="تنزيل").click()
        wait_finished(card)
        expect(card.locator(".job-state")).to_have_text("جاهز")
        expect(card.get_by_role("link", name="حفظ")).to_be_visible()
        expect(page.locator("#history h2")).to_have_text("تنزيلاتك")
        no_sideways_scroll(page)
        shot(page, "phone-ar-finished")
    page.locator("#url").fill(pages["none"])
    page.locator("#url").press("Enter")
    expect(page.locator("#status")).to_have_text("لم يُعثر على فيديو في هذا الرابط.")
    page.get_by_role("link", name="English").click()
    expect(html).to_have_attribute("dir", "ltr")
    expect(page.locator("h1")).to_have_text("Save a video from a link")
    assert not page.js_errors


def test_desktop_arabic_dark_and_keyboard(open_page, pages) -> None:
    page = open_page(
        "/?lang=ar&url=" + urllib.request.quote(pages["mp4"], safe=""), viewport=DESKTOP, dark=True
    )
    expect(page.locator("article.preview .title")).to_have_text("نزهة في الحديقة")
    background = page.evaluate("getComputedStyle(document.body).backgroundColor")
    assert background == "rgb(17, 19, 23)", "dark mode follows prefers-color-scheme"
    shot(page, "desktop-ar-dark")
    # Keyboard: Tab from the link box reaches the buttons, each with a visible focus ring.
    page.locator("#url").focus()
    page.keyboard.press("Tab")
    focused = page.evaluate("document.activeElement.textContent.trim()")
    assert focused in ("لصق", "معاينة")
    outline = page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
    assert outline == "solid"
    assert not page.js_errors


def test_streamed_download_when_serverless(browser, media_server, pages, tmp_path) -> None:  # noqa: ANN001
    server = Live(tmp_path, media_server, NAZZIL_MODE="serverless")
    try:
        # Without ?url= the stream endpoint answers 400; a build without it answers 404.
        if get_json(server.base + "/api/v1/stream")[0] == 404:
            pytest.skip("the stream API (/api/v1/stream) is not served by this build yet")
        context = browser.new_context(viewport=PHONE, accept_downloads=True)
        context.set_default_timeout(TIMEOUT_MS)
        page = context.new_page()
        page.goto(server.base + "/?url=" + urllib.request.quote(pages["mp4"], safe=""))
        card = page.locator("article.preview")
        expect(card.locator("details.trim")).to_be_hidden()
        card.get_by_label("Quality").select_option("audio")
        with page.expect_download() as info:
            card.get_by_role("button", name="Download").click()
        target = tmp_path / info.value.suggested_filename
        info.value.save_as(target)
        media = ffprobe_like(target)
        assert media["audio"] and not media["video"], media
        assert decode_ok(target)
        context.close()
    finally:
        server.stop()


def test_phone_many_videos_layout_and_titles_in_their_direction(open_page, jobs, pages) -> None:
    page = open_page("/?url=" + urllib.request.quote(pages["two_sources"], safe=""), viewport=PHONE)
    first, second = page.locator("article.preview").nth(0), page.locator("article.preview").nth(1)
    note = second.locator(".note")
    expect(note).to_contain_text("no link of its own")
    # Note and progress sit below thumbnail and title, across the card, not squeezed beside them.
    assert note.bounding_box()["width"] > second.bounding_box()["width"] * 0.8
    first.get_by_role("button", name="Download").click()
    wait_finished(first)
    assert first.locator(".job").bounding_box()["width"] > first.bounding_box()["width"] * 0.8
    # The history names the job as the entry the person chose, not after its media file.
    expect(page.locator("#history .job-title bdi")).to_have_text("Sources (1)")
    shot(page, "phone-en-note")
    # A long Arabic title on the English page is a right-aligned right-to-left paragraph.
    page.goto(page.url.split("?")[0] + "?url=" + urllib.request.quote(pages["mixed"], safe=""))
    title = page.locator("article.preview .title bdi")
    box, meta = title.bounding_box(), page.locator("article.preview .meta").bounding_box()
    assert box["height"] > 40, "the title wraps on a phone"
    assert abs(box["x"] + box["width"] - (meta["x"] + meta["width"])) < 2, (box, meta)
    direction = page.evaluate("getComputedStyle(document.querySelector('.title bdi')).direction")
    assert direction == "rtl"
    no_sideways_scroll(page)
    shot(page, "phone-en-arabic-title")
    assert not page.js_errors


def test_private_instance_login_then_download(browser, media_server, pages, tmp_path) -> None:  # noqa: ANN001
    # The page's Referrer-Policy: no-referrer makes Chromium send "Origin: null" with the
    # login form and with app.js's POSTs; they must still count as same-origin.
    server = Live(tmp_path, media_server, NAZZIL_ACCESS_TOKENS="browser-token")
    try:
        context = browser.new_context(viewport=PHONE, locale="en-US", accept_downloads=True)
        context.set_default_timeout(TIMEOUT_MS)
        page = context.new_page()
        page.goto(server.base + "/?url=" + urllib.request.quote(pages["mp4"], safe=""))
        expect(page.locator("h1")).to_have_text("Access token")
        page.get_by_label("Access token").fill("wrong")
        page.get_by_role("button", name="Continue").click()
        expect(page.locator(".error")).to_have_text("That access token is not valid.")
        page.get_by_label("Access token").fill("browser-token")
        page.get_by_role("button", name="Continue").click()
        card = page.locator("article.preview")
        expect(card.locator(".title")).to_have_text("نزهة في الحديقة")
        card.get_by_role("button", name="Download").click()  # a POST from app.js
        wait_finished(card)
        saved = save_file(page, card, tmp_path)
        assert ffprobe_like(saved)["video"]
        context.close()
    finally:
        server.stop()
