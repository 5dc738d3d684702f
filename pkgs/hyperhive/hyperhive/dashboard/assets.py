"""Static files and compression: versioned URLs cached for a year, gzip for HTML, CSS and JS.

``url_for('static', filename=F)`` carries ``?v=<content hash>``; a request with the current version is answered
``Cache-Control: public, max-age=31536000, immutable`` (a changed file gets a new URL, so a browser never re-checks
one it has), any other version or none with ``no-cache`` (revalidate every time). HTML, CSS, JavaScript and SVG go
out gzip-compressed when the client accepts it; the compressed static files are made once per version.
"""

from __future__ import annotations

import gzip
import hashlib
import threading
from pathlib import Path

from flask import Flask, request

YEAR = 365 * 86400
COMPRESSIBLE = {"text/html", "text/css", "text/javascript", "application/javascript", "image/svg+xml"}
MIN_BYTES = 512  # smaller bodies gain nothing from gzip

_lock = threading.Lock()
_versions: dict[tuple[str, int, int], str] = {}
_gzipped: dict[tuple[str, str], bytes] = {}


def _static_file(app: Flask, filename: str) -> Path | None:
    root = Path(app.static_folder).resolve()
    path = (root / filename).resolve()
    if root not in path.parents or not path.is_file():
        return None
    return path


def version(app: Flask, filename: str) -> str | None:
    """The first 12 hex digits of the SHA-256 of the file's content (None when there is no such file)."""
    path = _static_file(app, filename)
    if path is None:
        return None
    st = path.stat()
    key = (str(path), st.st_mtime_ns, st.st_size)
    with _lock:
        found = _versions.get(key)
    if found is None:
        found = hashlib.sha256(path.read_bytes()).hexdigest()[:12]
        with _lock:
            _versions[key] = found
    return found


def _gzip_static(app: Flask, filename: str, current: str) -> bytes:
    with _lock:
        data = _gzipped.get((filename, current))
    if data is None:
        data = gzip.compress(_static_file(app, filename).read_bytes(), compresslevel=9, mtime=0)
        with _lock:
            _gzipped[(filename, current)] = data
    return data


def accepts_gzip() -> bool:
    return request.accept_encodings.quality("gzip") > 0


def finish(app: Flask, response) -> None:
    """Cache headers for static files; gzip for what compresses (called for every response)."""
    static = request.endpoint == "static"
    current = None
    if static:
        filename = (request.view_args or {}).get("filename", "")
        current = version(app, filename)
        if current is not None and request.args.get("v") == current:
            response.headers["Cache-Control"] = f"public, max-age={YEAR}, immutable"
        else:
            response.headers["Cache-Control"] = "no-cache"
    if (response.status_code != 200 or response.mimetype not in COMPRESSIBLE or response.is_streamed and not static
            or "Content-Encoding" in response.headers):
        return
    response.vary.add("Accept-Encoding")
    if not accepts_gzip():
        return
    if static and current is not None:
        data = _gzip_static(app, filename, current)
        if response.get_etag()[0]:
            response.set_etag(f"{response.get_etag()[0]}-gzip")
    else:
        body = response.get_data()
        if len(body) < MIN_BYTES:
            return
        data = gzip.compress(body, compresslevel=6)
    response.direct_passthrough = False
    response.set_data(data)
    response.headers["Content-Encoding"] = "gzip"


def install(app: Flask) -> None:
    """Versioned static URLs: ``url_for('static', ...)`` adds ``v``."""

    @app.url_defaults
    def static_version(endpoint, values):
        if endpoint == "static" and "filename" in values and "v" not in values:
            v = version(app, values["filename"])
            if v:
                values["v"] = v
