"""Static files over HTTP: versioned URLs cached for a year, compressed HTML, CSS and JS, revalidation otherwise."""

from __future__ import annotations

import gzip
import hashlib
import re
from pathlib import Path

from browser import EventStream, http

STATIC = Path(__file__).resolve().parent.parent / "hyperhive" / "dashboard" / "static"
GZIP = {"Accept-Encoding": "gzip, deflate, br"}


def test_static_files_have_versioned_urls_cached_for_a_year_and_go_out_compressed(start_broker):
    hive = start_broker()
    url = hive.dashboard_url
    page = http(url, "GET", "/")
    links = dict(re.findall(r'(?:href|src)="/static/([\w.]+)\?v=([0-9a-f]+)"', page.text))
    assert set(links) == {"hive.css", "hive.js", "favicon.svg"}, links
    for name, v in links.items():
        content = (STATIC / name).read_bytes()
        assert v == hashlib.sha256(content).hexdigest()[:12], name  # a changed file gets a new URL

        reply = http(url, "GET", f"/static/{name}?v={v}", headers=GZIP)
        assert reply.status == 200
        cache = reply.headers["Cache-Control"]
        assert "immutable" in cache and "max-age=31536000" in cache and "public" in cache, cache
        assert reply.headers["Content-Encoding"] == "gzip", name
        assert "Accept-Encoding" in reply.headers["Vary"]
        assert len(reply.body) < len(content) and gzip.decompress(reply.body) == content
        assert int(reply.headers["Content-Length"]) == len(reply.body)

        plain = http(url, "GET", f"/static/{name}?v={v}")  # a client that does not ask for gzip
        assert plain.status == 200 and "Content-Encoding" not in plain.headers and plain.body == content

        refused = http(url, "GET", f"/static/{name}?v={v}", headers={"Accept-Encoding": "gzip;q=0, identity"})
        assert "Content-Encoding" not in refused.headers and refused.body == content

    # An old or missing version is not cached for good: the browser revalidates it.
    for query in ("?v=000000000000", ""):
        stale = http(url, "GET", f"/static/hive.css{query}", headers=GZIP)
        assert stale.status == 200 and stale.headers["Cache-Control"] == "no-cache", query
        assert gzip.decompress(stale.body) == (STATIC / "hive.css").read_bytes()
    assert http(url, "GET", "/static/nothing.css?v=1").status == 404


def test_pages_are_compressed_and_still_never_cached(start_broker):
    hive = start_broker()
    url = hive.dashboard_url
    for path in ("/", "/agents/alice", "/meta", "/fragments/home"):
        reply = http(url, "GET", path, headers=GZIP)
        assert reply.status == 200, path
        assert reply.headers["Content-Encoding"] == "gzip", path
        assert reply.headers["Cache-Control"] == "no-store", path
        assert "Accept-Encoding" in reply.headers["Vary"]
        html = gzip.decompress(reply.body).decode()
        assert "C0NTAINERS" in html if path in ("/", "/fragments/home") else "<h1" in html
        assert "Content-Security-Policy" in reply.headers
        plain = http(url, "GET", path)
        assert "Content-Encoding" not in plain.headers and plain.text.count("<h1") == html.count("<h1")
    # the live stream is never buffered for compression
    with EventStream(url, "/api/messages/stream", headers=GZIP) as stream:
        assert stream.status == 200 and "Content-Encoding" not in stream.headers
