"""Access tokens: open by default; with ACCESS_TOKENS the API needs Bearer, the page a login."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest

from nazzil import access
from nazzil.app import create_app

TOKEN = "s3cret-token-for-tests"
OTHER = "another-token"
BLOCKED_URL = "http://10.0.0.1/"


@pytest.fixture
def locked(config: dict) -> Any:
    """An app that requires one of two tokens."""
    return create_app({**config, "ACCESS_TOKENS": f"{TOKEN}, {OTHER}"})


def bearer(token: str) -> dict[str, str]:
    """The Authorization header for a token."""
    return {"Authorization": f"Bearer {token}"}


def assert_unauthorized(response: Any, error: str | None = None) -> None:
    """Check a 401 in the one JSON shape with its challenge."""
    assert response.status_code == 401, response.get_data(as_text=True)
    body = response.get_json()
    assert body["error"]["code"] == "unauthorized" and body["request_id"]
    challenge = response.headers["WWW-Authenticate"]
    assert challenge.startswith('Bearer realm="nazzil"')
    if error:
        assert f'error="{error}"' in challenge


def login(client: Any, token: str = TOKEN, **kwargs: Any) -> Any:
    """Post the login form."""
    return client.post("/login", data={"token": token, "next": "/"}, **kwargs)


def session_cookie(response: Any) -> str:
    """The access cookie header a login answer sets."""
    return next(
        v for v in response.headers.getlist("Set-Cookie") if v.startswith(access.COOKIE + "=")
    )


def test_without_tokens_the_instance_is_open(client) -> None:
    assert client.get("/api/v1/info", query_string={"url": BLOCKED_URL}).status_code == 403
    assert client.get("/").status_code == 200
    assert client.get("/api/v1/openapi.json").status_code == 200
    # The login page has nothing to ask.
    response = client.get("/login?next=/api/v1/openapi.json")
    assert response.status_code == 303 and response.headers["Location"].endswith(
        "/api/v1/openapi.json"
    )


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/api/v1/info?url=http://10.0.0.1/"),
        ("POST", "/api/v1/info"),
        ("GET", "/api/v1/openapi.json"),
        ("GET", "/api/v1/jobs"),
        ("POST", "/api/v1/jobs"),
        ("GET", "/api/v1/stream?url=http://10.0.0.1/"),
        ("GET", "/api/v1/nothing-here"),
    ],
)
def test_the_api_needs_a_token(locked, method, path) -> None:
    client = locked.test_client()
    response = client.open(path, method=method, json={"url": BLOCKED_URL})
    assert_unauthorized(response)


def test_a_bearer_token_opens_the_api(locked) -> None:
    client = locked.test_client()
    for token in (TOKEN, OTHER):
        response = client.get(
            "/api/v1/info", query_string={"url": BLOCKED_URL}, headers=bearer(token)
        )
        assert response.status_code == 403  # past the token check: the URL itself is refused
    assert (
        client.post("/api/v1/info", json={"url": BLOCKED_URL}, headers=bearer(TOKEN)).status_code
        == 403
    )


@pytest.mark.parametrize(
    "header",
    ["Bearer wrong", f"Bearer {TOKEN}x", f"Bearer {TOKEN[:-1]}", f"Basic {TOKEN}", "Bearer "],
)
def test_wrong_tokens_are_refused(locked, header) -> None:
    response = locked.test_client().get("/api/v1/openapi.json", headers={"Authorization": header})
    assert_unauthorized(response, "invalid_token" if header.startswith("Bearer w") else None)


def test_health_checks_stay_open(locked) -> None:
    client = locked.test_client()
    assert client.get("/healthz").status_code == 200
    assert client.get("/readyz").status_code in (200, 503)
    assert client.get("/static/app.css").status_code == 200


def test_tokens_are_kept_only_as_hashes(locked) -> None:
    digests = locked.extensions["nazzil"]["access_digests"]
    assert hashlib.sha256(TOKEN.encode()).digest() in digests
    dumped = repr(dict(locked.config)) + repr(locked.extensions["nazzil"])
    assert TOKEN not in dumped and OTHER not in dumped


def test_sha256_entries_work_without_the_plain_token(config) -> None:
    digest = hashlib.sha256(TOKEN.encode()).hexdigest()
    app = create_app({**config, "ACCESS_TOKENS": f"sha256:{digest}"})
    response = app.test_client().get("/api/v1/openapi.json", headers=bearer(TOKEN))
    assert response.status_code == 200


def test_a_malformed_hash_stops_the_start(config) -> None:
    with pytest.raises(ValueError, match="ACCESS_TOKENS"):
        create_app({**config, "ACCESS_TOKENS": "sha256:abc"})


def test_tokens_are_compared_in_constant_time(locked, monkeypatch) -> None:
    compared = []
    real = access.hmac.compare_digest

    def spy(a, b):  # noqa: ANN001, ANN202
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr(access.hmac, "compare_digest", spy)
    locked.test_client().get("/api/v1/openapi.json", headers=bearer(TOKEN))
    # Every configured token is compared, even after the first one matched.
    assert len(compared) == 2


# ------------------------------------------------------------------------------- the page


def test_the_page_asks_for_a_token_once(locked) -> None:
    client = locked.test_client()
    response = client.get("/?url=https://example.org/v", headers={"Accept": "text/html"})
    assert response.status_code == 303
    assert response.headers["Location"].startswith("/login?next=")
    form = client.get(response.headers["Location"])
    assert form.status_code == 200 and form.mimetype == "text/html"
    html = form.get_data(as_text=True)
    assert 'type="password"' in html and 'name="token"' in html
    assert 'value="/?url=https://example.org/v"' in html

    refused = login(client, "nope")
    assert refused.status_code == 401 and 'data-code="unauthorized"' in refused.get_data(
        as_text=True
    )
    assert access.COOKIE not in "".join(refused.headers.getlist("Set-Cookie"))

    accepted = client.post("/login", data={"token": TOKEN, "next": "/?url=https://example.org/v"})
    assert (
        accepted.status_code == 303
        and accepted.headers["Location"] == "/?url=https://example.org/v"
    )
    cookie = session_cookie(accepted)
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Secure" not in cookie
    assert TOKEN not in cookie

    # The page and the page's fetch calls to the API now work with the cookie alone.
    assert client.get("/").status_code == 200
    assert client.get("/api/v1/info", query_string={"url": BLOCKED_URL}).status_code == 403
    assert client.get("/api/v1/openapi.json").status_code == 200


def test_the_cookie_is_secure_over_https(locked) -> None:
    client = locked.test_client()
    response = login(client, base_url="https://nazzil.example")
    assert "Secure" in session_cookie(response)


def test_behind_a_proxy_https_comes_from_x_forwarded_proto(config) -> None:
    headers = {"X-Forwarded-Proto": "https", "X-Forwarded-For": "198.51.100.4"}
    behind = create_app({**config, "ACCESS_TOKENS": TOKEN, "PROXY_HOPS": "1"}).test_client()
    assert "Secure" in session_cookie(login(behind, headers=headers))
    # Without PROXY_HOPS the header is a client's claim and is ignored.
    direct = create_app({**config, "ACCESS_TOKENS": TOKEN}).test_client()
    assert "Secure" not in session_cookie(login(direct, headers=headers))


def test_a_forged_or_stale_cookie_is_refused(locked, config) -> None:
    client = locked.test_client()
    client.set_cookie(access.COOKIE, "forged.cookie.value")
    assert_unauthorized(client.get("/api/v1/openapi.json"))

    cookie = session_cookie(login(client)).split(";", 1)[0].split("=", 1)[1]
    # The same secret key, but the token was removed from the configuration.
    revoked = create_app({**config, "ACCESS_TOKENS": OTHER}).test_client()
    revoked.set_cookie(access.COOKIE, cookie)
    assert_unauthorized(revoked.get("/api/v1/openapi.json"))
    # Another secret key: the signature no longer holds.
    rekeyed = create_app({**config, "ACCESS_TOKENS": TOKEN, "SECRET_KEY": "other"}).test_client()
    rekeyed.set_cookie(access.COOKIE, cookie)
    assert_unauthorized(rekeyed.get("/api/v1/openapi.json"))


def test_logout_forgets_the_cookie(locked) -> None:
    client = locked.test_client()
    login(client)
    assert client.get("/api/v1/openapi.json").status_code == 200
    response = client.post("/logout")
    assert response.status_code == 303
    assert_unauthorized(client.get("/api/v1/openapi.json"))


@pytest.mark.parametrize(
    "target",
    ["//evil.example/", "https://evil.example/", "/\\evil.example", "javascript:alert(1)", "", "x"],
)
def test_login_never_redirects_off_site(locked, target) -> None:
    response = locked.test_client().post("/login", data={"token": TOKEN, "next": target})
    assert response.status_code == 303 and response.headers["Location"] == "/"


def test_login_attempts_are_rate_limited(config) -> None:
    app = create_app({**config, "ACCESS_TOKENS": TOKEN, "RATE_LIMIT_LOGIN": "3/minute"})
    client = app.test_client()
    statuses = [login(client, "guess").status_code for _ in range(4)]
    assert statuses == [401, 401, 401, 429]


def test_bad_tokens_do_not_use_up_the_rate_limit_of_others(config) -> None:
    app = create_app({**config, "ACCESS_TOKENS": TOKEN, "RATE_LIMIT_PREVIEW": "1/minute"})
    stranger = app.test_client()
    for _ in range(3):
        assert stranger.get("/api/v1/info", query_string={"url": BLOCKED_URL}).status_code == 401
    owner = app.test_client()
    response = owner.get("/api/v1/info", query_string={"url": BLOCKED_URL}, headers=bearer(TOKEN))
    assert response.status_code == 403


def test_the_page_fetching_without_a_cookie_gets_401_not_a_redirect(locked) -> None:
    client = locked.test_client()
    response = client.get("/preview?url=x", headers={"Sec-Fetch-Mode": "cors"})
    assert response.status_code == 401


def test_cookie_requests_from_other_sites_are_refused(locked) -> None:
    client = locked.test_client()
    login(client)
    evil = {"Origin": "https://evil.example"}
    response = client.post("/api/v1/info", json={"url": BLOCKED_URL}, headers=evil)
    assert response.status_code == 403 and response.get_json()["error"]["code"] == "forbidden"
    cross = {"Sec-Fetch-Site": "cross-site"}
    assert client.post("/api/v1/info", json={"url": BLOCKED_URL}, headers=cross).status_code == 403
    # The page itself (same origin) and reads are fine; a Bearer client sends no cookie anyway.
    same = {"Origin": "http://localhost"}
    response = client.post("/api/v1/info", json={"url": BLOCKED_URL}, headers=same)
    assert response.get_json()["error"]["code"] == "blocked_address"  # past the checks
    assert client.get("/api/v1/openapi.json", headers=evil).status_code == 200


def test_login_from_another_site_is_refused(locked) -> None:
    response = login(locked.test_client(), headers={"Origin": "https://evil.example"})
    assert response.status_code == 403
    assert access.COOKIE not in "".join(response.headers.getlist("Set-Cookie"))
