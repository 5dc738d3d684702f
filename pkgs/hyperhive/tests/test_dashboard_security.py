"""Who may use the dashboard: the token, the login cookie, cross-site refusals, response headers, and the service
refusing to start where the dashboard would be unsafe."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from browser import http
from conftest import HiveProcess, write_config

TOKEN = "s3cret-token-for-tests"


def cookies_of(reply) -> dict[str, str]:
    """name -> the whole Set-Cookie line."""
    out = {}
    for line in reply.headers.get_all("Set-Cookie") or []:
        out[line.split("=", 1)[0]] = line
    return out


def cookie_header(*set_cookie_lines: str) -> str:
    return "; ".join(line.split(";", 1)[0] for line in set_cookie_lines)


def csrf_of(page_text: str) -> str:
    return re.search(r'name="csrf_token" value="([0-9a-f]+)"', page_text).group(1)


def inbox_of(hive, name: str) -> list[str]:
    result = hive.client(name).call("recv", max=100)
    if result["messages"]:
        hive.client(name).call("ack", ids=[m["id"] for m in result["messages"]])
    return [m["body"] for m in result["messages"]]


def assert_security_headers(url):
    for path in ("/", "/api/state", "/static/hive.css", "/api/nothing"):
        headers = http(url, "GET", path).headers
        csp = headers["Content-Security-Policy"]
        assert "default-src 'none'" in csp and "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
        assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
        assert headers["X-Content-Type-Options"] == "nosniff"
        assert headers["X-Frame-Options"] == "DENY"


def test_without_a_token_cross_site_requests_are_refused_and_scripts_work(start_broker):
    hive = start_broker()
    url = hive.dashboard_url
    assert_security_headers(url)

    # A script (curl) sending JSON needs nothing else.
    assert http(url, "POST", "/api/messages", json={"to": "alice", "body": "from a script"}).status == 201

    # A cross-site page cannot make the browser change anything.
    evil = http(url, "POST", "/api/messages", data={"to": "alice", "body": "forged"},
                headers={"Origin": "http://evil.example", "Sec-Fetch-Site": "cross-site"})
    assert evil.status == 403 and "cross-site" in evil.error["message"]
    other_origin = http(url, "POST", "/api/messages", json={"to": "alice", "body": "forged"},
                        headers={"Origin": "http://localhost:1"})
    assert other_origin.status == 403 and "origin http://localhost:1" in other_origin.error["message"]
    # A form post without the CSRF token (an old browser that sends neither header).
    bare_form = http(url, "POST", "/api/messages", data={"to": "alice", "body": "forged"})
    assert bare_form.status == 403 and "CSRF" in bare_form.error["message"]

    # The page's own form: its CSRF token and the browser's sid cookie.
    page = http(url, "GET", "/")
    sid = cookies_of(page)["hh_sid"]
    assert "HttpOnly" in sid and "SameSite=Strict" in sid
    form = http(url, "POST", "/api/messages",
                data={"csrf_token": csrf_of(page.text), "next": "/", "to": "alice", "body": "from the form"},
                headers={"Cookie": cookie_header(sid), "Origin": url, "Sec-Fetch-Site": "same-origin"})
    assert form.status == 303 and form.headers["Location"] == "/"
    # With our cookie a JSON request must carry the token too (it comes from a browser).
    cookie_only = http(url, "POST", "/api/messages", json={"to": "alice", "body": "forged"},
                       headers={"Cookie": cookie_header(sid)})
    assert cookie_only.status == 403
    wrong = http(url, "POST", "/api/messages", json={"to": "alice", "body": "forged"},
                 headers={"Cookie": cookie_header(sid), "X-CSRF-Token": "0" * 64})
    assert wrong.status == 403 and "invalid CSRF" in wrong.error["message"]
    fetch = http(url, "POST", "/api/messages", json={"to": "alice", "body": "from the page's fetch"},
                 headers={"Cookie": cookie_header(sid), "X-CSRF-Token": csrf_of(page.text)})
    assert fetch.status == 201

    assert inbox_of(hive, "alice") == ["from a script", "from the form", "from the page's fetch"]

    # DNS rebinding: a page on another name that resolves to 127.0.0.1 cannot even read.
    rebound = http(url, "GET", "/api/state", headers={"Host": "evil.example:8080"})
    assert rebound.status == 403 and "Host" in rebound.error["message"]
    assert http(url, "GET", "/api/state", headers={"Host": "localhost:8080"}).status == 200


def test_under_the_nixos_container_backend_the_dashboard_always_needs_a_token(start_broker):
    """Its containers share the host's network (privateNetwork = false, modules/hyperhive.nix): a dashboard on the
    host's loopback without a token would let any agent, or the manager, approve its own proposals. With no
    tokenFile the service makes one in the state directory (0600; no container mounts it) and every request needs
    it; a restart keeps it."""
    import stat

    from standins.support import without_nixos_container_env

    env = without_nixos_container_env()
    hive = start_broker({"alice": {}}, backend="nixos-container", env=env)
    token_file = hive.config.state_dir / "dashboard.token"
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    token = token_file.read_text().strip()
    assert len(token) >= 40
    url = hive.dashboard_url
    assert http(url, "GET", "/api/state").status == 401
    assert http(url, "POST", "/api/approvals/1/approve", json={}).status == 401  # what an agent would try
    assert http(url, "POST", "/api/messages", json={"to": "alice", "body": "as the operator"}).status == 401
    assert http(url, "GET", "/api/state", token=token).status == 200
    hive.stop()
    again = start_broker({"alice": {}}, backend="nixos-container", env=env)
    assert token_file.read_text().strip() == token
    assert http(again.dashboard_url, "GET", "/api/state", token=token).status == 200


def test_with_a_token_every_request_needs_it(start_broker, hive_dir):
    token_file = hive_dir / "dashboard.token"
    token_file.write_text(TOKEN + "\n")
    hive = start_broker(dashboard={"tokenFile": str(token_file)})
    url = hive.dashboard_url

    refused = http(url, "GET", "/api/state")
    assert refused.status == 401 and refused.error["code"] == "forbidden" and "token" in refused.error["message"]
    assert refused.headers["WWW-Authenticate"].startswith("Bearer")
    assert http(url, "GET", "/api/state", token="wrong").status == 401
    assert http(url, "GET", "/api/messages/stream").status == 401
    assert http(url, "POST", "/api/messages", json={"to": "alice", "body": "no token"}).status == 401
    assert http(url, "GET", "/api/state", token=TOKEN).status == 200
    page = http(url, "GET", "/agents/alice")
    assert page.status == 303 and page.headers["Location"] == "/login?next=/agents/alice"
    assert http(url, "GET", "/static/hive.css").status == 200  # the login page needs its style

    # A script with the bearer token needs no CSRF token.
    assert http(url, "POST", "/api/messages", json={"to": "alice", "body": "bearer"}, token=TOKEN).status == 201

    # The login form sets an HttpOnly, SameSite=Strict cookie that stands for the token.
    login_page = http(url, "GET", "/login?next=/agents/alice")
    sid = cookies_of(login_page)["hh_sid"]
    csrf = csrf_of(login_page.text)
    wrong = http(url, "POST", "/login", data={"csrf_token": csrf, "token": "nope", "next": "/"},
                 headers={"Cookie": cookie_header(sid)})
    assert wrong.status == 401 and "wrong token" in wrong.text
    no_csrf = http(url, "POST", "/login", data={"token": TOKEN}, headers={"Cookie": cookie_header(sid)})
    assert no_csrf.status == 403
    ok = http(url, "POST", "/login", data={"csrf_token": csrf, "token": TOKEN, "next": "/agents/alice"},
              headers={"Cookie": cookie_header(sid)})
    assert ok.status == 303 and ok.headers["Location"] == "/agents/alice"
    auth = cookies_of(ok)["hh_auth"]
    assert "HttpOnly" in auth and "SameSite=Strict" in auth and TOKEN not in auth
    cookies = cookie_header(sid, auth)
    assert http(url, "GET", "/agents/alice", headers={"Cookie": cookies}).status == 200
    assert http(url, "POST", "/api/messages", json={"to": "alice", "body": "cookie, no csrf"},
                headers={"Cookie": cookies}).status == 403
    assert http(url, "POST", "/api/messages", json={"to": "alice", "body": "cookie and csrf"},
                headers={"Cookie": cookies, "X-CSRF-Token": csrf}).status == 201
    assert inbox_of(hive, "alice") == ["bearer", "cookie and csrf"]

    # A new token in the file ends the old one, and every login made with it.
    token_file.write_text("the-next-token")
    assert http(url, "GET", "/api/state", token=TOKEN).status == 401
    assert http(url, "GET", "/api/state", headers={"Cookie": cookies}).status == 401
    assert http(url, "GET", "/api/state", token="the-next-token").status == 200
    logout = http(url, "POST", "/logout", data={"csrf_token": csrf}, headers={"Cookie": cookies})
    assert logout.status == 303 and "hh_auth=;" in cookies_of(logout)["hh_auth"]


def test_a_token_replaced_by_a_file_with_the_same_mtime_still_ends_the_old_one(start_broker, hive_dir):
    """Secrets are often installed with their times kept (install -p, cp -p, rsync -t, the Nix store's mtime 1):
    a new token file counts as new even when its mtime is the old one's."""
    token_file = hive_dir / "dashboard.token"
    token_file.write_text("first-token-aaaa")
    os.utime(token_file, ns=(1_000_000_000, 1_000_000_000))
    hive = start_broker(dashboard={"tokenFile": str(token_file)})
    url = hive.dashboard_url
    assert http(url, "GET", "/api/state", token="first-token-aaaa").status == 200
    staged = hive_dir / "dashboard.token.new"
    staged.write_text("other-token-bbbb")
    os.utime(staged, ns=(1_000_000_000, 1_000_000_000))
    os.replace(staged, token_file)
    assert http(url, "GET", "/api/state", token="first-token-aaaa").status == 401
    assert http(url, "GET", "/api/state", token="other-token-bbbb").status == 200


def test_a_next_target_never_leaves_the_dashboard(start_broker):
    """Browsers read "/\\host" (and "/\t/host") as "//host": such a next= is not a page of this dashboard."""
    url = start_broker().dashboard_url
    for target in ("/%5Cevil.example", "/%5C%5Cevil.example/x", "/%09/evil.example", "/%0A/evil.example",
                   "//evil.example", "https://evil.example", "/%2F/evil.example"):
        reply = http(url, "GET", f"/login?next={target}")
        location = reply.headers["Location"]
        # what a browser would follow: a path of this origin (werkzeug sends a backslash or tab as %5C, %09)
        assert reply.status == 303 and location.startswith("/") and location[1:2] not in ("/", "\\"), location
        assert not any(ord(c) < 33 or c == "\\" for c in location), location
    reply = http(url, "GET", "/login?next=/agents/alice%3Frev%3Dmain")
    assert reply.headers["Location"] == "/agents/alice?rev=main"
    login = http(url, "GET", "/")
    sid = cookies_of(login)["hh_sid"]
    csrf = csrf_of(login.text)
    reply = http(url, "POST", "/api/messages", data={"to": "alice", "body": "hi", "csrf_token": csrf,
                                                     "next": "/\\evil.example"},
                 headers={"Cookie": cookie_header(sid)})
    location = reply.headers["Location"]
    assert reply.status == 303 and location.startswith("/") and location[1:2] not in ("/", "\\"), location


def serve_fails(directory, **top) -> str:
    """Start ``hyperhive serve`` on a config that must be refused; its stderr."""
    config = write_config(directory, **top)
    result = subprocess.run([sys.executable, "-m", "hyperhive", "serve", "--config", str(config), "--no-agents"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode != 0, result.stdout
    return result.stderr


def test_the_service_refuses_a_public_dashboard_without_a_token(hive_dir):
    message = serve_fails(hive_dir, dashboard={"listen": "0.0.0.0:0"})
    assert "dashboard.listen" in message and "tokenFile" in message and "loopback" in message
    check = subprocess.run([sys.executable, "-m", "hyperhive", "config", "check", str(hive_dir / "hive.json")],
                           capture_output=True, text=True, timeout=60)
    assert check.returncode != 0 and "tokenFile" in check.stderr


@pytest.mark.parametrize("content, words", [(None, ("cannot be read", "missing.token")),
                                            ("  \n", ("is empty",))])
def test_the_service_refuses_a_token_file_it_cannot_use(hive_dir, content, words):
    token_file = hive_dir / "missing.token"
    if content is not None:
        token_file.write_text(content)
    message = serve_fails(hive_dir, dashboard={"listen": "0.0.0.0:0", "tokenFile": str(token_file)})
    for word in words:
        assert word in message, message
    assert "Traceback" not in message


def test_a_public_dashboard_with_a_token_starts(hive_dir):
    token_file = hive_dir / "dashboard.token"
    token_file.write_text(TOKEN)
    hive = HiveProcess(write_config(hive_dir, dashboard={"listen": "0.0.0.0:0", "tokenFile": str(token_file)}),
                       args=("--no-agents",)).start()
    try:
        url = hive.dashboard_url.replace("0.0.0.0", "127.0.0.1")
        assert http(url, "GET", "/api/state").status == 401
        # with a token the Host header is not restricted (the name a laptop reaches the host by)
        assert http(url, "GET", "/api/state", token=TOKEN, headers={"Host": "hive.lan:8080"}).status == 200
    finally:
        hive.stop()


def _login(url, token):
    page = http(url, "GET", "/login")
    sid = cookies_of(page)["hh_sid"]
    reply = http(url, "POST", "/login", data={"csrf_token": csrf_of(page.text), "token": token, "next": "/"},
                 headers={"Cookie": cookie_header(sid)})
    return reply, sid


def test_guessing_the_token_is_rate_limited_per_client(start_broker, hive_dir):
    from hyperhive.dashboard.security import LOGIN_MAX_FAILURES, LOGIN_WINDOW_SECONDS

    token_file = hive_dir / "dashboard.token"
    token_file.write_text(TOKEN)
    hive = start_broker(dashboard={"tokenFile": str(token_file)})
    url = hive.dashboard_url
    for i in range(LOGIN_MAX_FAILURES):
        reply = (_login(url, f"guess-{i}")[0] if i % 2 else http(url, "GET", "/api/state", token=f"guess-{i}"))
        assert reply.status == 401, (i, reply.status)
    # now every way of trying is refused, even the right token, with a Retry-After within the window
    for reply in (_login(url, TOKEN)[0], http(url, "GET", "/api/state", token=TOKEN),
                  http(url, "GET", "/api/state", token="guess-again")):
        assert reply.status == 429, reply.status
        retry = int(reply.headers["Retry-After"])
        assert 1 <= retry <= LOGIN_WINDOW_SECONDS
    assert "too many failed attempts" in http(url, "GET", "/api/state", token=TOKEN).error["message"]
    # a request that does not try to authenticate is not refused for it (the login page still shows)
    assert http(url, "GET", "/login").status == 200


def test_a_login_expires_after_session_max_age(start_broker, hive_dir):
    token_file = hive_dir / "dashboard.token"
    token_file.write_text(TOKEN)
    hive = start_broker(dashboard={"tokenFile": str(token_file), "sessionMaxAgeSeconds": 2})
    url = hive.dashboard_url
    ok, sid = _login(url, TOKEN)
    auth = cookies_of(ok)["hh_auth"]
    assert "Max-Age=2" in auth
    cookies = cookie_header(sid, auth)
    assert http(url, "GET", "/api/state", headers={"Cookie": cookies}).status == 200
    # the server ends it, whatever the browser keeps
    from conftest import wait_for
    wait_for(lambda: http(url, "GET", "/api/state", headers={"Cookie": cookies}).status == 401, timeout=20,
             interval=0.5, message="the login to expire")
    # a cookie claiming a later issue time is not the server's
    value = auth.split(";", 1)[0].split("=", 1)[1]
    later = str(int(value.split(".")[0]) + 3600) + "." + value.split(".")[1]
    assert http(url, "GET", "/api/state", headers={"Cookie": f"hh_auth={later}"}).status == 401
    # an expired login is not a guess: an open page retrying with it does not lock the operator out
    for _ in range(12):
        assert http(url, "GET", "/api/state", headers={"Cookie": cookies}).status == 401
    assert _login(url, TOKEN)[0].status == 303
