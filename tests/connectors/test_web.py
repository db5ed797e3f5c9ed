"""The web connector against a real local http.server on 127.0.0.1 (loopback allowed explicitly)."""

from __future__ import annotations

import dataclasses
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

import connectors
from connectors import web
from connectors.base import Raw, Skip
from connectors.config import IngestConfig
from connectors.report import IngestReport
from core.errors import SkipError

PAGES = {
    "/": b"<html><head><title>Home</title></head><body><h1>Welcome home</h1>"
         b"<p>The handbook starts here.</p><a href='/a.html'>A</a> <a href=\"b.html#x\">B</a>"
         b"<a href='http://example.com/elsewhere'>off-site</a></body></html>",
    "/a.html": b"<html><head><title>Page A</title></head><body><p>Alpha page text about leases.</p>"
               b"<a href='/deep.html'>deeper</a></body></html>",
    "/b.html": b"<html><head><title>Page B</title></head><body><p>Beta page text about deposits.</p></body></html>",
    "/deep.html": b"<html><body><p>Too deep to reach with depth 1.</p></body></html>",
    "/notes.txt": b"plain text notes",
}


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 - http.server API
        path = self.path
        if path == "/loop1":
            return self._redirect("/loop2")
        if path == "/loop2":
            return self._redirect("/loop1")
        if path == "/to-other-host":
            return self._redirect(f"http://127.0.0.2:{self.server.server_port}/")
        if path == "/big":
            body = b"<p>" + b"x" * 50_000 + b"</p>"
            return self._send(body, "text/html")
        if path == "/latin1":
            return self._send("<p>Grüße aus Köln</p>".encode("latin-1"), "text/html; charset=iso-8859-1")
        if path in PAGES:
            ctype = "text/plain" if path.endswith(".txt") else "text/html"
            return self._send(PAGES[path], ctype)
        self.send_response(404)
        self.end_headers()

    def _redirect(self, where):
        self.send_response(302)
        self.send_header("Location", where)
        self.end_headers()

    def _send(self, body, ctype):
        self.send_response(200)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):  # keep test output quiet
        pass


@pytest.fixture(scope="module")
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_port}"
    httpd.shutdown()
    httpd.server_close()


LOCAL = IngestConfig(web_allow_private=True, web_timeout_s=5, workers=1)


def items(url, cfg=LOCAL):
    return list(web.crawl(url, cfg))


def test_depth_and_same_site(server):
    got = items(server + "/", dataclasses.replace(LOCAL, web_depth=1))
    urls = [i.meta["uri"] for i in got if isinstance(i, Raw)]
    assert urls == [server + "/", server + "/a.html", server + "/b.html"]  # no deep page, no example.com
    assert items(server + "/") and len(items(server + "/")) == 1  # depth 0: the page only


def test_documents_have_web_metadata(server):
    docs = list(connectors.load(server + "/", cfg=LOCAL))
    assert len(docs) == 1
    meta = docs[0].metadata
    assert meta["title"] == "Home" and meta["source"] == server + "/" and meta["mime"] == "text/html"
    assert len(meta["sha256"]) == 64 and meta["modified"]
    assert "The handbook starts here." in docs[0].text


def test_http_charset_header_is_honoured(server):
    (doc,) = connectors.load(server + "/latin1", cfg=LOCAL)
    assert "Grüße aus Köln" in doc.text


def test_private_address_is_refused_by_default(server):
    report = IngestReport()
    assert list(connectors.load(server + "/", report=report)) == []
    assert [(s.reason) for s in report.skipped] == ["private_address"]
    # a private range is refused before any connection is attempted
    (skip,) = items("http://10.1.2.3/", IngestConfig())
    assert skip.reason == "private_address"


@pytest.mark.parametrize("ip", ["10.0.0.1", "172.16.5.4", "192.168.1.1", "127.0.0.1", "169.254.169.254",
                                "::1", "fe80::1", "::ffff:127.0.0.1", "0.0.0.0", "fd00::1"])
def test_non_public_addresses_are_refused(ip):
    with pytest.raises(SkipError) as e:
        web.check_address(ip, IngestConfig(), "host")
    assert e.value.reason == "private_address"


@pytest.mark.parametrize("ip", [
    "100.64.0.1", "100.127.255.254",        # shared address space (carrier-grade NAT): not global
    "2002:7f00:1::", "2002:7f00:1::1",      # 6to4 embedding 127.0.0.1: is_global says True
    "2002:a9fe:a9fe::",                     # 6to4 embedding 169.254.169.254 (cloud metadata)
    "2002:a00:1::",                         # 6to4 embedding 10.0.0.1
    "64:ff9b::7f00:1", "64:ff9b::a9fe:a9fe",  # NAT64 to loopback / link-local: is_global says True
    "2001:0:4136:e378:8000:63bf:80ff:fffe",  # Teredo, client 127.0.0.1
    "::ffff:100.64.0.1", "224.0.0.1", "ff02::1", "192.0.2.1", "2001:db8::1",
])
def test_addresses_that_lead_to_non_public_ones_are_refused(ip):
    with pytest.raises(SkipError) as e:
        web.check_address(ip, IngestConfig(), "host")
    assert e.value.reason == "private_address" and "non-public address" in str(e.value)
    web.check_address(ip, IngestConfig(web_allow_private=True), "host")  # allowed when asked for


@pytest.mark.parametrize("ip", ["93.184.215.14", "2002:5db8:d70e::", "64:ff9b::5db8:d70e",
                                "::ffff:93.184.215.14", "2606:2800:220:1::1"])
def test_public_address_passes(ip):
    web.check_address(ip, IngestConfig(), "example.org")  # no exception: public, and so is what it embeds


def test_redirect_target_is_checked_again(server, monkeypatch):
    real = web.check_address

    def only_first_loopback(ip, cfg, host):
        # 127.0.0.1 is allowed, any other address falls back to the default policy
        return real(ip, dataclasses.replace(cfg, web_allow_private=(ip == "127.0.0.1")), host)

    monkeypatch.setattr(web, "check_address", only_first_loopback)
    (skip,) = items(server + "/to-other-host", IngestConfig())
    assert isinstance(skip, Skip) and skip.reason == "private_address" and "127.0.0.2" in skip.message


def test_redirect_loop_is_a_skip(server):
    (skip,) = items(server + "/loop1")
    assert skip.reason == "redirect_loop" and "/loop2" in skip.message


def test_oversized_response_is_a_skip(server):
    (skip,) = items(server + "/big", dataclasses.replace(LOCAL, web_max_bytes=10_000))
    assert skip.reason == "too_large"


def test_http_error_and_non_http_scheme(server):
    (skip,) = items(server + "/missing")
    assert skip.reason == "http_error" and "404" in skip.message
    (skip,) = items("ftp://example.org/file", LOCAL)
    assert skip.reason == "unsupported"


def test_ingest_mixes_web_and_files_and_counts_skips(server, tmp_path):
    (tmp_path / "local.txt").write_text("A local note about leases and deposits.")
    cfg = dataclasses.replace(LOCAL, web_depth=1)
    result = connectors.ingest([str(tmp_path), server + "/", server + "/loop1"], cfg)
    sources = {d.metadata["source"] for d in result.documents}
    assert {"local.txt", server + "/", server + "/a.html", server + "/b.html"} <= sources
    assert result.report.skip_counts() == {"redirect_loop": 1}


def test_links_from_awkward_html():
    page = (b"<HTML><BODY><A HREF=/upper.html>upper</A> <a href='single.html'>single</a>"
            b"<a class=x href = \"spaced.html#frag\">spaced</a> <a href=unquoted/q.html?x=1&amp;y=2>unquoted</a>"
            b"<a href=\"mailto:a@example.org\">m</a><a href=\"javascript:void(0)\">j</a><a href=\"#top\">t</a>"
            b"<a href=\"tel:123\">tel</a><a href=\"ftp://example.org/f\">ftp</a><a>no href</a><a href=\"\">empty</a>"
            b"<!-- <a href=\"/commented.html\">gone</a> --><script>var s = '<a href=\"/in-script.html\">';</script>"
            b"<a href=\"//other.example.org/p\">scheme-relative</a><a href=\"  /trimmed.html \">trimmed</a>"
            b"<a href=\"/caf\xc3\xa9.html\">utf-8</a></BODY></HTML>")
    assert web.links(page, "http://h.example.org/dir/page.html") == [
        "http://h.example.org/upper.html",
        "http://h.example.org/dir/single.html",
        "http://h.example.org/dir/spaced.html",
        "http://h.example.org/dir/unquoted/q.html?x=1&y=2",  # the entity is decoded, as a browser does
        "http://other.example.org/p",
        "http://h.example.org/trimmed.html",
        "http://h.example.org/café.html",
    ]


@pytest.mark.parametrize("body", [b"", b"   \n", b"<!-- nothing -->", b"\xff\xfe\x00<p>", b"<p>no links</p>"])
def test_links_of_pages_without_any(body):
    assert web.links(body, "http://h.example.org/") == []


def test_links_of_xhtml_with_an_encoding_declaration():
    page = b'<?xml version="1.0" encoding="iso-8859-1"?><html xmlns="http://www.w3.org/1999/xhtml"><body>' \
           b'<a href="/x.html">x</a></body></html>'
    assert web.links(page, "https://h.example.org/") == ["https://h.example.org/x.html"]
