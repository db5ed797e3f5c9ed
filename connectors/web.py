"""Web pages: http(s) only, a depth limit, same-site by default, a size cap and a timeout.

Every hop (the first request and each redirect) resolves the host name, refuses private, loopback,
link-local, multicast and reserved addresses unless ``web_allow_private`` is set, and then connects to
the very address it checked, so a DNS answer that changes between the check and the connection (DNS
rebinding) cannot slip through. TLS still verifies the certificate against the host name.

    from connectors.web import crawl
    for item in crawl("https://example.org/docs/", IngestConfig(web_depth=1)):
        ...  # Raw (page bytes + metadata) or Skip
"""

from __future__ import annotations

import http.client
import ipaddress
import logging
import re
import socket
import ssl
import time
from collections import deque
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Iterator
from urllib.parse import urldefrag, urljoin, urlsplit

from connectors.base import Raw, Skip, iso_utc, sha256_hex
from connectors.config import IngestConfig
from connectors.formats import FORMATS, suffix_of
from core.errors import SkipError

log = logging.getLogger(__name__)

_CONTENT_KINDS = {
    "text/html": ".html",
    "application/xhtml+xml": ".html",
    "text/plain": ".txt",
    "text/markdown": ".md",
    "text/csv": ".csv",
    "application/json": ".json",
    "application/pdf": ".pdf",
}


@dataclass
class Response:
    url: str
    status: int
    content_type: str
    charset: str | None
    body: bytes
    last_modified: str | None


# NAT64's well-known prefix: the last 32 bits are an IPv4 address that the translator connects to.
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


def _embedded_ipv4(addr: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """The IPv4 addresses an IPv6 address leads to: IPv4-mapped, 6to4 (2002::/16), Teredo
    (2001::/32: server and client) and NAT64. ``is_global`` calls 2002:7f00:1:: public, yet a 6to4
    relay takes it to 127.0.0.1."""
    out = [a for a in (addr.ipv4_mapped, addr.sixtofour) if a is not None]
    if addr.teredo is not None:
        out.extend(addr.teredo)
    if addr in _NAT64:
        out.append(ipaddress.IPv4Address(int(addr) & 0xFFFFFFFF))
    return out


def is_public_address(addr: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """Globally routable unicast, and so is every IPv4 address embedded in it. ``is_global`` is
    False for private, loopback, link-local, shared (100.64.0.0/10, carrier-grade NAT), reserved,
    documentation and unspecified ranges; multicast is refused on top."""
    if not addr.is_global or addr.is_multicast:
        return False
    if isinstance(addr, ipaddress.IPv6Address):
        return all(is_public_address(v4) for v4 in _embedded_ipv4(addr))
    return True


def check_address(ip: str, cfg: IngestConfig, host: str) -> None:
    """Refuse non-public addresses (see ``is_public_address``) unless allowed."""
    addr = ipaddress.ip_address(ip.split("%", 1)[0])
    if not is_public_address(addr) and not cfg.web_allow_private:
        shown = addr.ipv4_mapped if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped else addr
        raise SkipError(
            "private_address",
            f"{host} resolves to non-public address {shown} (set web_allow_private=true to allow)",
        )


def _resolve(host: str, port: int, cfg: IngestConfig) -> str:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as e:
        raise SkipError("dns_error", f"cannot resolve {host}: {e.strerror}") from None
    addrs = list(dict.fromkeys(info[4][0] for info in infos))
    for ip in addrs:  # every answer must pass: an attacker controls which one a client picks
        check_address(ip, cfg, host)
    return addrs[0]


class _PinnedHTTP(http.client.HTTPConnection):
    def __init__(self, host: str, port: int, ip: str, timeout: float):
        super().__init__(host, port, timeout=timeout)
        self._ip = ip

    def connect(self) -> None:
        self.sock = socket.create_connection((self._ip, self.port), self.timeout)


class _PinnedHTTPS(http.client.HTTPSConnection):
    def __init__(self, host: str, port: int, ip: str, timeout: float):
        super().__init__(host, port, timeout=timeout, context=ssl.create_default_context())
        self._ip = ip

    def connect(self) -> None:
        sock = socket.create_connection((self._ip, self.port), self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)  # type: ignore[attr-defined]


def fetch(url: str, cfg: IngestConfig) -> Response:
    """GET ``url`` following redirects by hand, checking every hop; raises SkipError on refusal."""
    seen: list[str] = []
    deadline = time.monotonic() + cfg.web_timeout_s * (cfg.web_max_redirects + 1)
    current = url
    for _hop in range(cfg.web_max_redirects + 1):
        if current in seen:
            raise SkipError("redirect_loop", f"redirect loop: {' -> '.join(seen + [current])}")
        seen.append(current)
        parts = urlsplit(current)
        if parts.scheme not in ("http", "https"):
            raise SkipError("unsupported", f"only http(s) URLs are fetched, got {current!r}")
        if not parts.hostname:
            raise SkipError("bad_url", f"URL has no host: {current!r}")
        port = parts.port or (443 if parts.scheme == "https" else 80)
        ip = _resolve(parts.hostname, port, cfg)
        cls = _PinnedHTTPS if parts.scheme == "https" else _PinnedHTTP
        conn = cls(parts.hostname, port, ip, cfg.web_timeout_s)
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        try:
            conn.request("GET", path, headers={"User-Agent": cfg.web_user_agent, "Accept-Encoding": "identity"})
            resp = conn.getresponse()
            if resp.status in (301, 302, 303, 307, 308):
                loc = resp.getheader("Location")
                resp.close()
                if not loc:
                    raise SkipError("http_error", f"HTTP {resp.status} without Location from {current}")
                current = urldefrag(urljoin(current, loc))[0]
                continue
            if resp.status >= 400:
                raise SkipError("http_error", f"HTTP {resp.status} {resp.reason} from {current}")
            length = resp.getheader("Content-Length")
            if length and length.isdigit() and int(length) > cfg.web_max_bytes:
                raise SkipError("too_large", f"{length} bytes > web_max_bytes={cfg.web_max_bytes} at {current}")
            chunks, total = [], 0
            while True:
                if time.monotonic() > deadline:
                    raise SkipError("timeout", f"download exceeded its time budget at {current}")
                chunk = resp.read(65536)
                if not chunk:
                    break
                total += len(chunk)
                if total > cfg.web_max_bytes:
                    raise SkipError("too_large", f"more than web_max_bytes={cfg.web_max_bytes} at {current}")
                chunks.append(chunk)
            ctype = resp.getheader("Content-Type", "") or ""
            mime = ctype.split(";", 1)[0].strip().lower()
            m = re.search(r"charset\s*=\s*\"?([\w\-]+)", ctype, re.I)
            return Response(current, resp.status, mime, m.group(1) if m else None, b"".join(chunks),
                            resp.getheader("Last-Modified"))
        except (socket.timeout, TimeoutError):
            raise SkipError("timeout", f"no answer within web_timeout_s={cfg.web_timeout_s:g}s from {current}") from None
        except ssl.SSLError as e:
            raise SkipError("tls_error", f"TLS failed for {current}: {e.reason or e}") from None
        except (OSError, http.client.HTTPException) as e:
            raise SkipError("network_error", f"{type(e).__name__}: {e} ({current})") from None
        finally:
            conn.close()
    raise SkipError("redirect_loop", f"more than web_max_redirects={cfg.web_max_redirects} redirects from {url}")


def _site(host: str | None) -> str:
    host = (host or "").lower()
    return host[4:] if host.startswith("www.") else host


def links(body: bytes, base: str) -> list[str]:
    """Absolute http(s) links (``<a href>``) of an HTML page, fragments removed, in page order.

    The page is parsed by lxml's HTML parser (as UTF-8, undecodable bytes replaced), so quoting, case,
    entities in the href and links inside comments or scripts are handled as a browser would.
    """
    from lxml import etree
    from lxml import html as lhtml

    text = body.decode("utf-8", "replace")
    if not text.strip():
        return []
    parser = lhtml.HTMLParser(encoding="utf-8", no_network=True, remove_comments=True)
    try:
        root = lhtml.document_fromstring(text.encode("utf-8"), parser=parser)
    except (etree.ParserError, ValueError):
        return []
    out = []
    for a in root.iter("a"):
        raw = (a.get("href") or "").strip()
        if not raw or raw.startswith(("mailto:", "javascript:", "#", "tel:")):
            continue
        url = urldefrag(urljoin(base, raw))[0]
        if urlsplit(url).scheme in ("http", "https"):
            out.append(url)
    return out


def _to_raw(resp: Response) -> Raw | Skip:
    kind = _CONTENT_KINDS.get(resp.content_type) or suffix_of(urlsplit(resp.url).path)
    if kind not in FORMATS:
        return Skip(resp.url, "unsupported", f"unsupported content type {resp.content_type or '(none)'!r}")
    data = resp.body
    if resp.charset and kind == ".html":
        # The HTTP header outranks a <meta> tag; hand the parser UTF-8 it will take at face value.
        try:
            data = data.decode(resp.charset).encode("utf-8")
        except (LookupError, UnicodeDecodeError):
            pass
    modified = None
    if resp.last_modified:
        try:
            modified = parsedate_to_datetime(resp.last_modified).isoformat(timespec="seconds")
        except (TypeError, ValueError):
            modified = None
    name = urlsplit(resp.url).path.rsplit("/", 1)[-1] or "index"
    meta = {
        "source": resp.url,
        "uri": resp.url,
        "title": name,
        "mime": resp.content_type,
        "sha256": sha256_hex(resp.body),
        "modified": modified or iso_utc(time.time()),
        "bytes": len(resp.body),
    }
    return Raw(data=data, name=name, meta=meta, kind=kind)


def crawl(start: str, cfg: IngestConfig) -> Iterator[Raw | Skip]:
    """Breadth-first from ``start`` down to ``web_depth`` links, at most ``web_max_pages`` pages."""
    site = _site(urlsplit(start).hostname)
    queue: deque[tuple[str, int]] = deque([(urldefrag(start)[0], 0)])
    queued = {queue[0][0]}
    fetched = 0
    while queue and fetched < cfg.web_max_pages:
        url, depth = queue.popleft()
        try:
            resp = fetch(url, cfg)
        except SkipError as e:
            yield Skip(url, e.reason, str(e))  # logged and counted by the caller
            continue
        fetched += 1
        if resp.url != url and resp.url in queued and depth > 0:
            continue  # redirected to a page we already have
        queued.add(resp.url)
        yield _to_raw(resp)
        if depth >= cfg.web_depth or resp.content_type not in ("text/html", "application/xhtml+xml"):
            continue
        for link in links(resp.body, resp.url):
            if link in queued:
                continue
            if cfg.web_same_site and _site(urlsplit(link).hostname) != site:
                continue
            queued.add(link)
            queue.append((link, depth + 1))
