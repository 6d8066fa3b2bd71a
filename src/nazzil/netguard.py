"""The one place that decides which URLs and addresses nazzil may reach (SSRF guard)."""

from __future__ import annotations

import contextlib
import functools
import http.client
import ipaddress
import logging
import re
import socket
import ssl
import threading
import weakref
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from urllib.parse import quote, urljoin, urlsplit

from flask import Flask

from .errors import BlockedAddress, InvalidURL, UpstreamError, UpstreamTimeout
from .state import once

log = logging.getLogger(__name__)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

USER_AGENT = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/130.0 Safari/537.36"
)

_NAT64 = ipaddress.ip_network("64:ff9b::/96")
# RFC 8215 local-use NAT64 prefix: translates into a private network by definition.
_NAT64_LOCAL = ipaddress.ip_network("64:ff9b:1::/48")
_CGNAT = ipaddress.ip_network("100.64.0.0/10")

# Ranges refused whatever the running Python's ipaddress tables say (they differ by version).
BLOCKED_NETWORKS: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = tuple(
    ipaddress.ip_network(net)
    for net in (
        "0.0.0.0/8",
        "10.0.0.0/8",
        "100.64.0.0/10",
        "127.0.0.0/8",
        "169.254.0.0/16",
        "172.16.0.0/12",
        "192.0.0.0/24",
        "192.0.2.0/24",
        "192.88.99.0/24",
        "192.168.0.0/16",
        "198.18.0.0/15",
        "198.51.100.0/24",
        "203.0.113.0/24",
        "224.0.0.0/4",
        "240.0.0.0/4",
        "::/128",
        "::1/128",
        "64:ff9b:1::/48",
        "100::/64",
        "2001:db8::/32",
        "3fff::/20",
        "5f00::/16",
        "fc00::/7",
        "fe80::/10",
        "fec0::/10",
        "ff00::/8",
    )
)


class AddressBlocked(OSError):
    """A connection was refused because its address is not public and not trusted."""

    # yt-dlp often reports a failed download by message only (no exception chain):
    # the mark lets extract.classify() still recognise a refusal of the guard.
    MARK = "[nazzil: address not allowed]"

    def __init__(self, message: str = "address not allowed") -> None:
        super().__init__(f"{message} {self.MARK}")


def resolve(host: str, port: int) -> list[tuple]:
    """Resolve a host to socket addresses; tests replace this to stub DNS."""
    return socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM)


def embedded_ipv4s(ip: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """Return the IPv4 addresses hidden in a mapped, NAT64, 6to4, Teredo or compatible address."""
    if ip.ipv4_mapped is not None:
        return [ip.ipv4_mapped]
    if ip in _NAT64 or ip in _NAT64_LOCAL:
        return [ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)]
    if ip.sixtofour is not None:
        return [ip.sixtofour]
    if ip.teredo is not None:
        return list(ip.teredo)  # the Teredo server and the (de-obfuscated) client
    # IPv4-compatible ::a.b.c.d (deprecated) and IPv4-translated ::ffff:0:a.b.c.d (SIIT).
    if int(ip) >> 32 in (0, 0xFFFF0000) and int(ip) > 1:
        return [ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)]
    return []


def is_public(ip: IPAddress) -> bool:
    """Tell whether an address is globally routable unicast (not private, loopback, etc.)."""
    if any(ip.version == net.version and ip in net for net in BLOCKED_NETWORKS):
        return False
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.scope_id:
            return False
        inner = embedded_ipv4s(ip)
        if inner:
            # The tunnel leads wherever its IPv4 leads: every embedded address must be public.
            return all(is_public(v4) for v4 in inner)
        if ip.is_site_local:
            return False
    if ip.is_multicast or ip.is_unspecified or ip.is_loopback or ip.is_link_local:
        return False
    if ip.is_private or ip.is_reserved or not ip.is_global:
        return False
    return not (isinstance(ip, ipaddress.IPv4Address) and ip in _CGNAT)


def _norm_host(host: str) -> str:
    """Normalise a host for comparison: lower case, no brackets or final dot, canonical IPs."""
    host = host.strip().lower().strip("[]").rstrip(".")
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return host


def browser_may_load(url: str, policy: Policy | None) -> bool:
    """Tell whether the page may show an image from url: not from a private address spelled out.

    The viewer's browser fetches thumbnails itself; a site must not use them to probe the
    viewer's network. Names are left alone: the browser resolves them, not nazzil.
    """
    try:
        parts = urlsplit(url)
        host, port = parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        return False
    if parts.scheme.lower() not in ALLOWED_SCHEMES or not host:
        return False
    if not is_literal(host):
        return True
    policy = policy or Policy()
    try:
        infos = resolve(host, port)  # a literal: no DNS is asked
    except (OSError, UnicodeError):
        return False
    return bool(infos) and all(policy.allows(host, port, _ip_of(info[4])) for info in infos)


def is_literal(host: str) -> bool:
    """Tell whether a host is judged without DNS: an IP in any spelling, or a localhost name."""
    name = _norm_host(host)
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        ipaddress.ip_address(name.split("%")[0])
        return True
    except ValueError:
        pass
    try:
        socket.inet_aton(name)  # 2130706433, 0x7f.1, 127.1 ... resolve without DNS
    except (OSError, ValueError):
        return False
    return True


class Deadline:
    """An overall time limit for a piece of work: its connections are cut when time is up.

    Socket timeouts bound each read, not their sum: a site trickling a byte a second would
    otherwise hold a preview (and a server thread) for as long as it likes.
    """

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.expired = False
        self._sockets: weakref.WeakSet[socket.socket] = weakref.WeakSet()
        self._lock = threading.Lock()
        self._timer: threading.Timer | None = None

    def __enter__(self) -> Deadline:
        if self.seconds > 0:
            self._timer = threading.Timer(self.seconds, self._expire)
            self._timer.daemon = True
            self._timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._timer is not None:
            self._timer.cancel()

    def bind(self, policy: Policy) -> Policy:
        """Return the policy with its connections under this deadline."""
        return replace(policy, deadline=self)

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            sockets = list(self._sockets)
        log.info(
            "overall time limit of %.0f s reached: closing %d connections",
            self.seconds,
            len(sockets),
        )
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)  # wakes a thread blocked in recv()

    def track(self, sock: socket.socket) -> None:
        """Cut this connection when the time is up (at once if it already is)."""
        with self._lock:
            if not self.expired:
                self._sockets.add(sock)
                return
        sock.close()
        raise TimeoutError("the overall time limit is reached")


@dataclass(frozen=True)
class Policy:
    """Which private hosts are trusted; everything public is allowed."""

    hosts: frozenset[tuple[str, int | None]] = field(default_factory=frozenset)
    networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    deadline: Deadline | None = field(default=None, compare=False, repr=False)

    @classmethod
    def from_trusted(cls, entries: Iterable[str]) -> Policy:
        """Build a policy from TRUSTED_HOSTS entries: host, host:port, [v6]:port or CIDR."""
        hosts: set[tuple[str, int | None]] = set()
        networks = []
        for raw in entries:
            entry = raw.strip().lower()
            if not entry:
                continue
            try:
                networks.append(ipaddress.ip_network(entry, strict=False))
                continue
            except ValueError:
                pass
            host, port_text = entry, ""
            if entry.startswith("["):
                host, _, rest = entry[1:].partition("]")
                if rest and not rest.startswith(":"):
                    raise ValueError(f"NAZZIL_TRUSTED_HOSTS: malformed entry {raw!r}")
                port_text = rest[1:]
            elif entry.count(":") == 1:
                host, _, port_text = entry.partition(":")
            port = None
            if port_text or entry.endswith(":"):
                if not port_text.isdigit() or not 0 < int(port_text) < 65536:
                    raise ValueError(f"NAZZIL_TRUSTED_HOSTS: bad port in {raw!r}")
                port = int(port_text)
            host = _norm_host(host)
            if not host or not _valid_host(host):
                raise ValueError(f"NAZZIL_TRUSTED_HOSTS: bad host in {raw!r}")
            hosts.add((host, port))
        return cls(frozenset(hosts), tuple(networks))

    def trusts(self, host: str, port: int, ip: IPAddress | None = None) -> bool:
        """Tell whether host:port (resolved to ip) was declared trusted."""
        host = _norm_host(host)
        if (host, None) in self.hosts or (host, port) in self.hosts:
            return True
        if ip is not None:
            text = str(ip)
            if (text, None) in self.hosts or (text, port) in self.hosts:
                return True
            return any(ip.version == net.version and ip in net for net in self.networks)
        return False

    def allows(self, host: str, port: int, ip: IPAddress) -> bool:
        """Tell whether a connection to ip (for host:port) may be made."""
        return is_public(ip) or self.trusts(host, port, ip)

    def local_name(self, host: str, port: int) -> bool:
        """Tell whether host is an untrusted localhost name (RFC 6761: always loopback)."""
        name = _norm_host(host)
        is_local = name == "localhost" or name.endswith(".localhost")
        return is_local and not self.trusts(host, port)

    def check_host(self, host: str, port: int) -> None:
        """Refuse a host whose every address is blocked; other resolution errors pass."""
        if self.local_name(host, port):
            raise BlockedAddress()
        try:
            infos = resolve(host, port)
        except (OSError, UnicodeError):
            return  # the fetch itself reports it as an upstream error
        addresses = [_ip_of(info[4]) for info in infos]
        if addresses and not any(self.allows(host, port, ip) for ip in addresses):
            raise BlockedAddress()

    def create_connection(
        self,
        address: tuple[str, int],
        timeout: float | None = None,
        source_address: tuple[str, int] | None = None,
    ) -> socket.socket:
        """Connect like socket.create_connection, but only to allowed addresses."""
        host, port = address
        if self.local_name(host, port):
            raise AddressBlocked(f"{host} is not allowed")
        infos = resolve(host, port)
        error: OSError | None = None
        for family, type_, proto, _, sockaddr in infos:
            ip = _ip_of(sockaddr)
            if not self.allows(host, port, ip):
                log.warning("blocked connection to %s:%s (%s)", host, port, ip)
                error = AddressBlocked(f"address of {host} is not allowed")
                continue
            sock = socket.socket(family, type_, proto)
            try:
                if timeout is not None and timeout is not socket._GLOBAL_DEFAULT_TIMEOUT:
                    sock.settimeout(timeout)
                if source_address:
                    sock.bind(source_address)
                sock.connect(sockaddr)
                if self.deadline is not None:
                    self.deadline.track(sock)
                return sock
            except OSError as exc:
                sock.close()
                if not isinstance(error, AddressBlocked):
                    error = exc
        raise error or OSError(f"no address for {host}")


def _ip_of(sockaddr: tuple) -> IPAddress:
    return ipaddress.ip_address(str(sockaddr[0]).split("%")[0])


ALLOWED_SCHEMES = ("http", "https")

# Demuxers ffmpeg may use on a downloaded (attacker-written) file. Left to probe freely, it
# would read an MPD (by content, whatever the file's name) or an .m3u8 as a manifest and pull
# in any local file it names; these plain containers never open another file or URL.
FFMPEG_SAFE_DEMUXERS = (
    "mov,matroska,ogg,flv,mp3,aac,wav,flac,avi,mpegts,asf,mpeg,ac3,eac3,aiff,caf,amr,dts,wv,ape"
)
# Input options for every ffmpeg/ffprobe run on a local file.
FFMPEG_FILE_INPUT = ("-protocol_whitelist", "file", "-format_whitelist", FFMPEG_SAFE_DEMUXERS)


def check_url(url: object, max_length: int = 4096) -> str:
    """Validate a user's URL: absolute http(s), sane host and port; return it stripped."""
    if not isinstance(url, str):
        raise InvalidURL("The link must be text.")
    # A pasted link may hold raw spaces (a file name); browsers send them as %20, so do we.
    url = url.strip().replace(" ", "%20")
    if not url:
        raise InvalidURL("The link is empty.")
    if len(url) > max_length:
        raise InvalidURL(f"The link is longer than {max_length} characters.")
    if any(ord(c) < 0x21 or 0x7F <= ord(c) < 0xA0 for c in url):
        raise InvalidURL("The link contains control characters.")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise InvalidURL("The link's host or port is malformed.") from None
    if parts.scheme.lower() not in ALLOWED_SCHEMES:
        raise InvalidURL("Only http and https links are supported.")
    if parts.username is not None or parts.password is not None:
        raise InvalidURL("Links with a user name or password are not supported.")
    host = parts.hostname
    if not host:
        raise InvalidURL("The link has no host.")
    if port == 0:
        raise InvalidURL("The link's port is malformed.")
    if not _valid_host(host):
        raise InvalidURL("The link's host is malformed.")
    return url


def _valid_host(host: str) -> bool:
    if host.startswith("[") or ":" in host:
        try:
            ipaddress.IPv6Address(host.strip("[]").split("%")[0])
        except ValueError:
            return False
        return "%" not in host
    try:
        ascii_host = host.encode("idna").decode("ascii") if not host.isascii() else host
    except UnicodeError:
        return False
    ascii_host = ascii_host.rstrip(".")
    if not ascii_host or len(ascii_host) > 253:
        return False
    labels = ascii_host.split(".")
    return all(
        0 < len(label) <= 63
        and all(c.isalnum() or c in "-_" for c in label)
        and not label.startswith("-")
        for label in labels
    )


def host_port(url: str) -> tuple[str, int]:
    """Return the host and port a URL connects to."""
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme.lower() == "https" else 80)
    return (parts.hostname or ""), port


def precheck(url: str, policy: Policy, max_length: int = 4096) -> str:
    """Validate a URL and refuse it early when its host only resolves to blocked addresses."""
    url = check_url(url, max_length)
    policy.check_host(*host_port(url))
    return url


class _GuardedHTTPConnection(http.client.HTTPConnection):
    policy: Policy

    def connect(self) -> None:
        self.sock = self.policy.create_connection((self.host, self.port), self.timeout)


class _GuardedHTTPSConnection(http.client.HTTPSConnection):
    policy: Policy

    def connect(self) -> None:
        sock = self.policy.create_connection((self.host, self.port), self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)


REDIRECTS = (301, 302, 303, 307, 308)
# Headers a caller (or a site, through yt-dlp's http_headers) may not choose: they would
# redirect the request to another virtual host, or break the framing of the connection.
_RESERVED_HEADERS = frozenset(
    {
        "host", "connection", "keep-alive", "proxy-authorization", "proxy-connection", "te",
        "trailer", "transfer-encoding", "upgrade", "content-length", "expect",
        "accept-encoding",  # fetch() never decodes: bodies must come as they are stored
    }
)  # fmt: skip


def _safe_headers(headers: dict[str, str]) -> dict[str, str]:
    """Drop reserved headers and any name or value with control characters."""
    out = {}
    for name, value in headers.items():
        name, value = str(name), str(value)
        if name.lower() in _RESERVED_HEADERS or not name.isascii() or not name.isprintable():
            continue
        if " " in name or ":" in name or any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
            continue
        out[name] = value
    return out


_FOLD = re.compile(r"[\r\n]+[ \t]*")


def _unfold(msg: http.client.HTTPMessage) -> None:
    """Replace obs-fold line breaks in a response's header values with a space (RFC 9112).

    http.client keeps them: copied into nazzil's own answer (ETag, Content-Type ...) a CR LF
    would split it, or at best make it fail.
    """
    if not any("\r" in v or "\n" in v for v in msg.values()):
        return
    items = msg.items()
    for name in {name for name, _ in items}:
        del msg[name]
    for name, value in items:
        msg[name] = _FOLD.sub(" ", value).strip()


@functools.cache
def tls_context() -> ssl.SSLContext:
    """The verifying client TLS context, made once: loading the CA store costs ~15 ms."""
    # An SSLContext is safe to share between threads and connections.
    return ssl.create_default_context()


def fetch(
    url: str,
    policy: Policy,
    *,
    method: str = "GET",
    headers: dict[str, str] | None = None,
    timeout: float = 15,
    max_redirects: int = 5,
) -> http.client.HTTPResponse:
    """Open a URL through the guard, following http(s) redirects; caller closes the response."""
    # Connection: close makes the response own the socket, so closing it frees everything.
    send = {
        "User-Agent": USER_AGENT,
        "Accept-Encoding": "identity",
        **_safe_headers(headers or {}),
        "Connection": "close",
    }
    for hop in range(max_redirects + 1):
        try:
            url = check_url(url)
        except InvalidURL:
            if hop == 0:
                raise
            raise UpstreamError("The site redirected to a malformed link.") from None
        parts = urlsplit(url)
        secure = parts.scheme.lower() == "https"
        cls = _GuardedHTTPSConnection if secure else _GuardedHTTPConnection
        kwargs = {"context": tls_context()} if secure else {}
        conn = cls(parts.hostname, parts.port, timeout=timeout, **kwargs)
        conn.policy = policy
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        # http.client sends the target as ASCII: percent-encode what a browser would.
        target = quote(target, safe="!#$%&'()*+,/:;=?@[]~")
        try:
            conn.request(method, target, headers=send)
            resp = conn.getresponse()
        except AddressBlocked:
            conn.close()
            raise BlockedAddress() from None
        except TimeoutError:
            conn.close()
            raise UpstreamTimeout() from None
        except (OSError, http.client.HTTPException, ValueError) as exc:
            conn.close()
            raise UpstreamError(f"Could not reach the site ({type(exc).__name__}).") from None
        location = resp.getheader("Location")
        if resp.status in REDIRECTS and location:
            resp.close()
            conn.close()
            try:
                url = urljoin(url, location.strip())
                scheme = urlsplit(url).scheme.lower()
            except ValueError:
                raise UpstreamError("The site redirected to a malformed link.") from None
            if scheme not in ALLOWED_SCHEMES:
                # ftp:, file:, gopher: ... would leave the guard; only http(s) is followed.
                raise BlockedAddress("The site redirected to a link that is not http(s).")
            if resp.status == 303:
                method = "GET"
            continue
        _unfold(resp.msg)
        resp.url = url  # type: ignore[attr-defined]
        return resp
    raise UpstreamError("The site redirected too many times.")


def policy_for(app: Flask) -> Policy:
    """Return the app's address policy, built once from TRUSTED_HOSTS."""
    return once(app, "policy", lambda: Policy.from_trusted(app.config["NAZZIL_TRUSTED_HOSTS"]))
