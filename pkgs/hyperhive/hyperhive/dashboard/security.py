"""Who may use the dashboard, and protection against cross-site requests.

- Token: when ``dashboard.tokenFile`` is set, every request needs it, as ``Authorization: Bearer <token>`` or the
  login cookie (HttpOnly, SameSite=Strict) that ``/login`` sets: the time it was issued and an HMAC of that time
  keyed by the token, so it ends after ``dashboard.sessionMaxAgeSeconds`` (the server checks the time; the
  browser's Max-Age is only a courtesy). The file is read again when it changes, so a rotated token takes effect
  without a restart (and ends every login made with the old one). Tokens are compared in constant time (digests
  of equal length, ``hmac.compare_digest``).
- Guessing: a client (by address) that fails ``LOGIN_MAX_FAILURES`` times within ``LOGIN_WINDOW_SECONDS`` (a wrong
  token at ``/login``, a wrong bearer token or a forged login cookie) gets 429 with ``Retry-After`` for every
  authentication attempt until the oldest failure leaves the window.
- Without a token the dashboard only listens on loopback (config.py refuses anything else), and the Host header
  must name a loopback host, so a web page cannot reach it through DNS rebinding.
- Never without a token under the ``nixos-container`` backend: its containers share the host's network
  (``privateNetwork = false`` in modules/hyperhive.nix), so the host's loopback is every agent's loopback, and an
  agent (or the manager) could approve its own proposals there. With no ``tokenFile`` the service makes one,
  ``<stateDir>/dashboard.token`` (0600, random), which no container mounts.
- Cross-site requests: every state-changing request is refused when ``Sec-Fetch-Site`` says cross-site or
  same-site, or when ``Origin`` names another origin; a request a browser could send with the cookies (a form, or
  anything carrying our cookies) must also carry the CSRF token (an HMAC of the per-browser ``hh_sid`` cookie).
  A script sending JSON without our cookies (with the bearer token where one is set) needs no CSRF token.
- Every response carries a strict Content-Security-Policy, ``nosniff`` and frame denial.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import math
import os
import secrets
import threading
import time
from collections import deque
from pathlib import Path

from ..config import is_loopback_host
from ..errors import StartError

log = logging.getLogger(__name__)

AUTH_COOKIE = "hh_auth"
SID_COOKIE = "hh_sid"
CSRF_HEADER = "X-CSRF-Token"
CSRF_FIELD = "csrf_token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "font-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
LOGIN_MAX_FAILURES = 10
LOGIN_WINDOW_SECONDS = 60.0
LOGIN_TRACKED_CLIENTS = 4096  # the table of failing clients is bounded; the oldest entries go first
SESSION_CLOCK_SKEW_SECONDS = 60  # a login cookie issued later than now plus this is refused

# Raw repo files are served as text; a sandbox keeps even a mislabelled one from running anything.
RAW_CSP = "default-src 'none'; sandbox"


class TokenError(Exception):
    """The token file cannot be used."""


class DashboardStartError(StartError):
    """The dashboard cannot start safely; the service stops with this sentence instead of a traceback."""


def _load_secret(state_dir: Path) -> bytes:
    """The key for CSRF tokens, kept in the state dir so open pages stay valid across restarts."""
    path = state_dir / "dashboard.secret"
    try:
        data = path.read_bytes()
        if len(data) >= 32:
            return data
    except FileNotFoundError:
        pass
    except OSError as e:
        log.warning("cannot read %s (%s); CSRF tokens will change on restart", path, e)
        return secrets.token_bytes(32)
    data = secrets.token_bytes(32)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
    except OSError as e:
        log.warning("cannot write %s (%s); CSRF tokens will change on restart", path, e)
    return data


class TooManyAttempts(Exception):
    """This client failed to authenticate too often; it may try again after ``retry_after`` seconds."""

    def __init__(self, retry_after: int):
        super().__init__(f"too many failed attempts; try again in {retry_after} s")
        self.retry_after = retry_after


class LoginLimiter:
    """Failed authentication attempts per client address, in a sliding window."""

    def __init__(self, max_failures: int = LOGIN_MAX_FAILURES, window: float = LOGIN_WINDOW_SECONDS):
        self.max_failures = max_failures
        self.window = window
        self._lock = threading.Lock()
        self._failures: dict[str, deque] = {}

    def failed(self, client: str | None) -> None:
        now = time.monotonic()
        with self._lock:
            times = self._failures.pop(client or "?", None) or deque()
            times.append(now)
            while len(times) > self.max_failures:
                times.popleft()
            self._failures[client or "?"] = times  # (re)inserted last: dicts keep order, oldest first
            while len(self._failures) > LOGIN_TRACKED_CLIENTS:
                self._failures.pop(next(iter(self._failures)))

    def retry_after(self, client: str | None) -> int:
        """Seconds until this client may try again; 0 when it may now."""
        now = time.monotonic()
        with self._lock:
            times = self._failures.get(client or "?")
            if not times:
                return 0
            while times and times[0] <= now - self.window:
                times.popleft()
            if len(times) < self.max_failures:
                return 0
            return max(1, math.ceil(times[0] + self.window - now))


def _make_token(path: Path) -> None:
    """A random token at ``path`` unless a file is there (never through a link planted there)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except FileExistsError:
        return
    except OSError as e:
        raise DashboardStartError(f"cannot make the dashboard token {path}: {e.strerror or e}") from None
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_urlsafe(32) + "\n")
    log.info("made the dashboard token %s (the containers share the host's network)", path)


class Guard:
    def __init__(self, hive):
        self.hive = hive
        self.login_limiter = LoginLimiter()
        self._secret = _load_secret(hive.config.state_dir)
        self._token_cache: tuple[str | None, tuple | None, str | None] = (None, None, None)
        if self.token_file != hive.config.dashboard.token_file:  # the one the service makes
            _make_token(Path(self.token_file))
        if self.token_file:
            try:
                self.token()  # fail the start now when the file is missing or empty
            except TokenError as e:
                raise DashboardStartError(str(e)) from None
        elif not is_loopback_host(hive.config.dashboard.host):
            raise DashboardStartError(
                f"refusing to serve the dashboard on {hive.config.dashboard.listen} without a token: "
                "set dashboard.tokenFile, or listen on 127.0.0.1")

    # --- the token -----------------------------------------------------------------------------------------

    @property
    def token_file(self) -> str | None:
        return self.hive.config.dashboard_token_file

    def token(self) -> str | None:
        """The current token (None when none is configured); raises TokenError when there is none to use."""
        path = self.token_file
        if not path:
            return None
        try:
            st = os.stat(path)
        except OSError as e:
            cached_path, _, cached = self._token_cache
            if cached and cached_path == path:
                log.warning("dashboard token file %s unreadable (%s); keeping the last token", path, e)
                return cached
            raise TokenError(f"dashboard.tokenFile {path} cannot be read: {e.strerror or e}") from None
        # Not the mtime alone: a secret installed with its times kept (install -p, the Nix store) is new all the same.
        version = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
        cached_path, cached_version, cached = self._token_cache
        if cached_path == path and cached_version == version and cached:
            return cached
        try:
            token = Path(path).read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as e:
            if cached:
                return cached
            raise TokenError(f"dashboard.tokenFile {path} cannot be read: {e}") from None
        if not token:
            if cached:
                log.warning("dashboard token file %s is empty; keeping the last token", path)
                return cached
            raise TokenError(f"dashboard.tokenFile {path} is empty; put the dashboard token in it")
        self._token_cache = (path, version, token)
        return token

    @property
    def session_max_age(self) -> int:
        return self.hive.config.dashboard.session_max_age_seconds

    def login_cookie_value(self, token: str, issued: int | None = None) -> str:
        """``<issued>.<hmac>``: when the login was made, signed with the token (a new token ends every login)."""
        issued = int(time.time()) if issued is None else issued
        mac = hmac.new(token.encode(), f"hyperhive dashboard login v2:{issued}".encode(), hashlib.sha256)
        return f"{issued}.{mac.hexdigest()}"

    def check_login_cookie(self, token: str, cookie: str) -> str:
        """"ok"; "expired" (signed by this token, but too old: not a guess, a page left open); "bad"."""
        issued_text, _, _ = cookie.partition(".")
        if not issued_text.isdigit() or len(issued_text) > 12:
            return "bad"
        issued = int(issued_text)
        if not hmac.compare_digest(cookie.encode(), self.login_cookie_value(token, issued).encode()):
            return "bad"
        now = time.time()
        if issued > now + SESSION_CLOCK_SKEW_SECONDS:
            return "bad"
        return "ok" if issued >= now - self.session_max_age else "expired"

    def check_token(self, candidate: str | None) -> bool:
        token = self.token()
        if not token or not candidate:
            return False
        # digests, so that neither the length nor a prefix of the token shows in the time taken
        return hmac.compare_digest(hashlib.sha256(candidate.encode()).digest(),
                                   hashlib.sha256(token.encode()).digest())

    def authenticate(self, request) -> str | None:
        """How the request proved itself: "open" (no token set), "bearer", "cookie"; None when it did not."""
        token = self.token()
        if token is None:
            return "open"
        header = request.headers.get("Authorization", "")
        cookie = request.cookies.get(AUTH_COOKIE)
        bearer = header[:7].lower() == "bearer "
        if (bearer or cookie) and self.login_limiter.retry_after(request.remote_addr):
            raise TooManyAttempts(self.login_limiter.retry_after(request.remote_addr))
        if bearer:
            if self.check_token(header[7:].strip()):
                return "bearer"
            self.login_limiter.failed(request.remote_addr)
        if cookie:
            verdict = self.check_login_cookie(token, cookie)
            if verdict == "ok":
                return "cookie"
            if verdict == "bad":  # (an expired login is no guess: an open page's event stream retries with it)
                self.login_limiter.failed(request.remote_addr)
        return None

    # --- loopback Host -------------------------------------------------------------------------------------

    def host_allowed(self, request) -> bool:
        if self.token() is not None:
            return True
        host = (request.host or "").lower()
        if host.startswith("["):
            host = host[1:].split("]", 1)[0]
        else:
            host = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
        return is_loopback_host(host) or host == self.hive.config.dashboard.host.lower()

    # --- CSRF ----------------------------------------------------------------------------------------------

    def csrf_token(self, sid: str) -> str:
        return hmac.new(self._secret, f"csrf:{sid}".encode(), hashlib.sha256).hexdigest()

    def cross_site_problem(self, request) -> str | None:
        """Why this state-changing request looks cross-site, or None."""
        site = request.headers.get("Sec-Fetch-Site")
        if site in ("cross-site", "same-site"):
            return f"a {site} request cannot change anything here (Sec-Fetch-Site: {site})"
        origin = request.headers.get("Origin")
        if origin is not None:
            # the host only: behind a TLS-terminating proxy the page is https while this server sees http
            origin_host = origin.split("://", 1)[-1].rstrip("/").lower()
            if origin == "null" or origin_host != (request.host or "").lower():
                return (f"a request from origin {origin} cannot change anything here "
                        f"(expected a page of {request.host})")
        return None

    def csrf_problem(self, request, auth: str | None, body_is_json: bool) -> str | None:
        """Why this state-changing request lacks a needed CSRF token, or None."""
        if auth == "bearer":
            return None  # a browser cannot add this header to a cross-site request
        has_our_cookies = any(c in request.cookies for c in (AUTH_COOKIE, SID_COOKIE))
        if body_is_json and not has_our_cookies:
            return None  # a script; a browser cannot send a JSON body cross-site without CORS
        sid = request.cookies.get(SID_COOKIE)
        sent = request.headers.get(CSRF_HEADER) or (request.form.get(CSRF_FIELD) if not body_is_json else None)
        if not sid or not sent:
            return "missing CSRF token (reload the page and try again)"
        if not hmac.compare_digest(sent.encode(), self.csrf_token(sid).encode()):
            return "invalid CSRF token (reload the page and try again)"
        return None


def local_target(target: str | None, default: str = "/") -> str:
    """``target`` when it is a path of this dashboard to redirect to, else ``default``. Browsers drop tabs and
    newlines from a URL and read a backslash as a slash, so "/<TAB>/host" or "/\\host" would leave for host."""
    if (not target or not target.startswith("/") or target[1:2] in ("/", "\\")
            or any(ord(c) < 32 or ord(c) == 127 or c == "\\" for c in target)):
        return default
    return target


def new_sid() -> str:
    return secrets.token_urlsafe(24)
