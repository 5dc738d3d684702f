"""Headless Chromium for dashboard tests: Debian's /usr/bin/chromium driven by Playwright, never a download.

Use the fixture (``from browser import browser_page, chromium`` in a test module, then a ``browser_page`` argument:
a fresh context, so no cookie, storage or cache is shared, in one Chromium per test module), or
``with open_browser() as page: ...`` anywhere. Tests that need it are skipped, saying why, when Playwright or
Chromium is missing. Every page collects its console errors and uncaught exceptions (CSP violations included) in
``page.hive_errors``; assert ``console_errors(page) == []`` so a broken script cannot pass unnoticed.
"""

from __future__ import annotations

import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest

CHROMIUM = os.environ.get("HYPERHIVE_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage"]
SCREENSHOTS = Path(os.environ.get("HYPERHIVE_SCREENSHOTS", "/tmp/hyperhive-screenshots"))


def available() -> str | None:
    """Why a browser test cannot run here, or None."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright Python package is not installed"
    if not Path(CHROMIUM).exists():
        return f"no Chromium at {CHROMIUM} (install Debian's chromium, or set HYPERHIVE_CHROMIUM)"
    return None


@contextmanager
def launch_chromium() -> Iterator:
    """Headless Chromium (Playwright's Browser), closed afterwards."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield browser
        finally:
            browser.close()


@contextmanager
def new_page(browser, viewport: tuple[int, int] = (1440, 900), timeout_ms: int = 10_000) -> Iterator:
    """A page in a context of its own (cookies, storage, cache, permissions: nothing shared); closed afterwards."""
    context = browser.new_context(viewport={"width": viewport[0], "height": viewport[1]})
    try:
        page = context.new_page()
        page.set_default_timeout(timeout_ms)
        page.hive_errors = []
        page.on("console", lambda m: page.hive_errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: page.hive_errors.append(str(e)))
        yield page
    finally:
        context.close()


@contextmanager
def open_browser(viewport: tuple[int, int] = (1440, 900), timeout_ms: int = 10_000) -> Iterator:
    """A fresh page in a fresh headless Chromium; closed afterwards."""
    with launch_chromium() as browser, new_page(browser, viewport, timeout_ms) as page:
        yield page


def screenshot(page, name: str) -> Path:
    """Save a full-page screenshot under $HYPERHIVE_SCREENSHOTS (default /tmp/hyperhive-screenshots)."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def console_errors(page, ignore: tuple[str, ...] = ()) -> list[str]:
    """Console errors so far, without those expected (e.g. a deliberate 4xx the page reports)."""
    return [e for e in page.hive_errors if not any(i in e for i in ignore)]


@pytest.fixture(scope="module")
def chromium():
    """One Chromium for a test module (launching one costs seconds); each test gets a context of its own.

    Module-scoped, not session-scoped: while Playwright's sync API is running, its event loop counts as the
    thread's running loop, which would break tests elsewhere that start one of their own (asyncio.run, anyio)."""
    why = available()
    if why:
        from conftest import require

        require("headless Chromium", False, why)
    with launch_chromium() as browser:
        yield browser


@pytest.fixture
def browser_page(chromium):
    """A fresh page in a fresh browser context of the module's Chromium."""
    with new_page(chromium) as page:
        yield page


# --- plain HTTP to the dashboard (API tests, and checks a browser would hide) ---------------------------------

class Reply:
    def __init__(self, status: int, headers, body: bytes):
        self.status = status
        self.headers = headers
        self.body = body

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")

    def json(self):
        import json

        return json.loads(self.body)

    @property
    def error(self) -> dict:
        """The ``{"code", "message"}`` of an error reply."""
        return self.json()["error"]

    def __repr__(self) -> str:
        return f"<Reply {self.status} {self.body[:200]!r}>"


def http(base_url: str, method: str, path: str, *, json=None, data: bytes | str | dict | None = None,
         headers: dict | None = None, token: str | None = None, timeout: float = 15) -> Reply:
    """One request with http.client (no redirects followed, any header allowed, Host included)."""
    import http.client
    import json as jsonlib
    from urllib.parse import urlencode, urlsplit

    parts = urlsplit(base_url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    hdrs = dict(headers or {})
    body = None
    if json is not None:
        body = jsonlib.dumps(json).encode()
        hdrs.setdefault("Content-Type", "application/json")
    elif isinstance(data, dict):
        body = urlencode(data, doseq=True).encode()
        hdrs.setdefault("Content-Type", "application/x-www-form-urlencoded")
    elif data is not None:
        body = data.encode() if isinstance(data, str) else data
    if token:
        hdrs["Authorization"] = f"Bearer {token}"
    try:
        conn.request(method, path, body=body, headers=hdrs)
        response = conn.getresponse()
        return Reply(response.status, response.headers, response.read())
    finally:
        conn.close()


class EventStream:
    """A server-sent event stream read line by line: ``next_event()`` returns ``{"event", "id", "data"}``."""

    def __init__(self, base_url: str, path: str, headers: dict | None = None, timeout: float = 10):
        import http.client
        from urllib.parse import urlsplit

        parts = urlsplit(base_url)
        self.conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
        self.conn.request("GET", path, headers={"Accept": "text/event-stream", **(headers or {})})
        self.response = self.conn.getresponse()
        self.status = self.response.status
        self.headers = self.response.headers

    def next_event(self) -> dict:
        import json

        event = {"event": "message", "id": None, "data": ""}
        lines = []
        while True:
            raw = self.response.fp.readline()
            if not raw:
                raise EOFError("the stream ended")
            line = raw.decode("utf-8").rstrip("\n")
            if line == "":
                if lines:
                    event["data"] = json.loads("\n".join(lines))
                    return event
                continue
            if line.startswith(":"):
                continue
            field, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if field == "data":
                lines.append(value)
            elif field in ("event", "id"):
                event[field] = value

    def next_matching(self, predicate, limit: int = 200) -> dict:
        for _ in range(limit):
            event = self.next_event()
            if predicate(event):
                return event
        raise AssertionError("no matching event")

    def close(self) -> None:
        self.conn.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
