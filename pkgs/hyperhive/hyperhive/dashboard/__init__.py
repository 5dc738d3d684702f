"""The operator's dashboard: a flask app over the running ``Hive`` (pages, the JSON API, server-sent events).

``create_app(hive)`` builds it; ``server.DashboardServer`` serves it on ``dashboard.listen`` from the
``dashboard`` default plugin. Plugins add blueprints through the ``dashboard_blueprints`` hook; they sit behind
the same token, CSRF and header rules as everything else.
"""

from __future__ import annotations

import logging
import threading
from urllib.parse import quote

from flask import Flask, g, jsonify, redirect, render_template, request
from werkzeug.exceptions import HTTPException

from ..errors import HiveError
from ..transport import line_limit
from .security import CSP, CSRF_FIELD, SAFE_METHODS, SID_COOKIE, Guard, TokenError, TooManyAttempts, new_sid

log = logging.getLogger(__name__)

HTTP_STATUS = {"bad_request": 400, "forbidden": 403, "not_found": 404, "conflict": 409, "too_large": 413,
               "internal": 500}
CODE_OF_STATUS = {400: "bad_request", 401: "forbidden", 403: "forbidden", 404: "not_found",
                  405: "bad_request", 409: "conflict", 413: "too_large"}
OPEN_PATHS = ("/login", "/logout", "/static/", "/favicon.ico")


def wants_json() -> bool:
    return request.path.startswith("/api/") or request.path.startswith("/fragments/")


def create_app(hive, guard: Guard | None = None) -> Flask:
    from . import api, assets, pages

    app = Flask(__name__, static_folder="static", template_folder="templates")
    app.json.sort_keys = False
    app.json.ensure_ascii = False
    app.extensions["hive"] = hive
    app.extensions["guard"] = guard or Guard(hive)
    app.extensions["stopping"] = threading.Event()
    app.register_blueprint(api.bp)
    app.register_blueprint(pages.bp)
    for blueprints in hive.pm.hook.dashboard_blueprints(hive=hive):
        for blueprint in blueprints or ():
            app.register_blueprint(blueprint)
    pages.install_template_helpers(app)
    assets.install(app)

    def fail(code: str, message: str, status: int, headers: dict | None = None):
        if wants_json():
            response = jsonify({"error": {"code": code, "message": message}})
        else:
            response = app.make_response((render_template("error.html", code=code, message=message,
                                                          status=status), status))
        response.status_code = status
        for k, v in (headers or {}).items():
            response.headers[k] = v
        return response

    @app.before_request
    def check_request():
        the_guard: Guard = app.extensions["guard"]
        g.sid = request.cookies.get(SID_COOKIE)
        g.new_sid = None
        if not g.sid and request.method in SAFE_METHODS:
            g.sid = g.new_sid = new_sid()
        limit = line_limit(hive.config.broker.max_message_bytes)
        request.max_content_length = limit
        if request.content_length is not None and request.content_length > limit:
            return fail("too_large", f"request body is {request.content_length} bytes; the limit is {limit} "
                        "(maxMessageBytes escaped, plus envelope)", 413)
        if not the_guard.host_allowed(request):
            return fail("forbidden", f"unexpected Host header {request.host!r}: without a token this dashboard "
                        "answers only to a loopback host name", 403)
        try:
            g.auth = the_guard.authenticate(request)
        except TokenError as e:
            log.error("dashboard: %s", e)
            return fail("internal", f"the dashboard token is unavailable: {e}", 503)
        except TooManyAttempts as e:
            return too_many(e)
        if g.auth is None and not request.path.startswith(OPEN_PATHS):
            if wants_json() or request.method not in SAFE_METHODS:
                return fail("forbidden", "this dashboard needs its token: send \"Authorization: Bearer <token>\" "
                            "or log in at /login", 401, {"WWW-Authenticate": 'Bearer realm="hyperhive"'})
            target = request.full_path.rstrip("?")
            return redirect(f"/login?next={quote(target, safe='/')}", 303)
        if request.method not in SAFE_METHODS and request.routing_exception is None:
            # (a request that matches no route changes nothing; it gets its 404 or 405)
            problem = the_guard.cross_site_problem(request)
            if problem is None:
                problem = the_guard.csrf_problem(request, g.auth, request.is_json)
            if problem is not None:
                log.warning("dashboard: refused %s %s: %s", request.method, request.path, problem)
                return fail("forbidden", problem, 403)
        return None

    @app.after_request
    def add_headers(response):
        h = response.headers
        h.setdefault("Content-Security-Policy", CSP)
        h["X-Content-Type-Options"] = "nosniff"
        h["X-Frame-Options"] = "DENY"
        h["Referrer-Policy"] = "same-origin"
        h["Cross-Origin-Opener-Policy"] = "same-origin"
        h["Cross-Origin-Resource-Policy"] = "same-origin"
        if not request.path.startswith("/static/"):
            h.setdefault("Cache-Control", "no-store")
        assets.finish(app, response)
        if g.get("new_sid"):
            response.set_cookie(SID_COOKIE, g.new_sid, httponly=True, samesite="Strict", path="/",
                                secure=request.is_secure)
        return response

    def too_many(e: TooManyAttempts):
        log.warning("dashboard: %s refused: %s", request.remote_addr, e)
        return fail("too_many_requests", f"{e} (at most {the_limiter().max_failures} failed attempts in "
                    f"{the_limiter().window:g} s)", 429, {"Retry-After": str(e.retry_after)})

    def the_limiter():
        return app.extensions["guard"].login_limiter

    @app.errorhandler(TooManyAttempts)
    def too_many_attempts(e: TooManyAttempts):
        return too_many(e)

    @app.errorhandler(HiveError)
    def hive_error(e: HiveError):
        return fail(e.code, e.message, HTTP_STATUS.get(e.code, 500))

    @app.errorhandler(HTTPException)
    def http_error(e: HTTPException):
        status = e.code or 500
        message = e.description or e.name
        headers = {}
        if status == 405:
            allowed = getattr(e, "valid_methods", None) or []
            allowed = [m for m in allowed if m not in ("HEAD", "OPTIONS")]
            message = f"{request.method} is not allowed on {request.path}" + (
                f"; use {' or '.join(allowed)}" if allowed else "")
            headers["Allow"] = ", ".join(getattr(e, "valid_methods", None) or [])
        elif status == 404:
            message = f"nothing at {request.path}"
        elif status == 413:
            limit = line_limit(hive.config.broker.max_message_bytes)
            message = f"request body is larger than {limit} bytes (maxMessageBytes escaped, plus envelope)"
        return fail(CODE_OF_STATUS.get(status, "internal" if status >= 500 else "bad_request"), message, status,
                    headers)

    @app.errorhandler(Exception)
    def unexpected(e: Exception):
        log.exception("dashboard: internal error on %s %s", request.method, request.path)
        return fail("internal", f"internal error: {type(e).__name__}: {e}", 500)

    app.extensions["csrf_field"] = CSRF_FIELD
    return app
