"""The dashboard's pages: ``/``, ``/agents/<name>``, ``/approvals/<id>``, ``/meta``, and login.

Pages are rendered on the server (they work without JavaScript: every form posts with its CSRF token); the
script keeps ``/`` live by fetching ``/fragments/home`` when the event stream says something changed and
replacing only the rows that differ, so a half-typed answer survives a refresh. The approval and agent pages keep
their parts marked ``data-live`` current the same way, from the page itself, on an event that names them.
"""

from __future__ import annotations

import logging
import re
from typing import Any, Callable

from flask import Blueprint, abort, current_app, g, make_response, redirect, render_template, request
from markupsafe import Markup

from .. import approvals, repos, spawn, times
from ..broker import OPERATOR
from ..errors import HiveError
from . import api
from .security import AUTH_COOKIE, CSRF_FIELD, TooManyAttempts, local_target
from .state import agents as agent_rows
from .state import attention, collect_state, page_offsets, with_activity

log = logging.getLogger(__name__)

bp = Blueprint("pages", __name__)

NOTES_SHOW_BYTES = 256 * 1024
DIFF_LINES_ON_CARD = 400


def hive():
    return current_app.extensions["hive"]


def install_template_helpers(app) -> None:
    @app.context_processor
    def helpers():
        guard = app.extensions["guard"]
        return {
            "csrf_token": lambda: guard.csrf_token(g.sid) if g.get("sid") else "",
            "csrf_field": CSRF_FIELD,
            "auth_mode": g.get("auth"),
            "standin": bool(app.extensions["hive"].extensions.get("standin_model")),
            "manager_name": app.extensions["hive"].config.manager,
            "attention": _attention,
        }

    def _attention():
        """For the header (only for a request that proved itself: a login page shows nothing of the hive)."""
        if g.get("auth") is None:
            return None
        cached = g.get("attention")
        if cached is None:
            cached = g.attention = attention_or_error(app.extensions["hive"])
        return cached

    # Every value a template prints passes here: bidi controls in agent text (U+202E made "exe.png" of
    # "gnp.exe") are shown as visible marks instead of reordering what the operator reads.
    app.jinja_env.finalize = neutralise_bidi
    app.jinja_env.filters["short"] = lambda sha: (sha or "")[:12]
    app.jinja_env.filters["when"] = when
    app.jinja_env.filters["difflines"] = diff_lines
    app.jinja_env.filters["diff_files"] = diff_files


def when(iso: str | None) -> str:
    """A stored time as every page and the CLI show it: ``2026-11-29 07:12:03 UTC`` (the script adds "5m ago" and
    keeps this in the tooltip)."""
    return times.when(iso) if iso else ""


def attention_or_error(h) -> dict:
    try:
        return attention(h)
    except Exception as e:
        log.warning("dashboard: the header's counts failed to load: %s", e, exc_info=True)
        return {"questions": 0, "approvals": 0, "inbox_unread": 0, "stuck": [], "crashed": [], "count": 0,
                "errors": [{"section": "attention", "error": f"{type(e).__name__}: {e}"}]}


BIDI_CONTROLS = re.compile("[\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def neutralise_bidi(value: Any) -> Any:
    """A printed value with each bidi control replaced by a visible ``[U+202E]`` (markup the templates built
    themselves is left as it is: what it holds was printed through here already)."""
    if isinstance(value, str) and not isinstance(value, Markup) and BIDI_CONTROLS.search(value):
        return BIDI_CONTROLS.sub(lambda m: f"[U+{ord(m.group()):04X}]", value)
    return value


def diff_lines(text: str | None, limit: int | None = None) -> list[tuple[str, str]]:
    """(css class, line) for each line of a unified diff."""
    out = []
    lines = (text or "").splitlines()
    for line in lines[:limit] if limit else lines:
        if line.startswith(("diff --git", "index ", "new file", "deleted file", "similarity", "rename ")):
            kind = "meta"
        elif line.startswith(("+++", "---")):
            kind = "file"
        elif line.startswith("@@"):
            kind = "hunk"
        elif line.startswith("+"):
            kind = "add"
        elif line.startswith("-"):
            kind = "del"
        else:
            kind = "ctx"
        out.append((kind, line))
    return out


def diff_files(text: str | None) -> list[str]:
    """The paths a diff touches (the new side), for links to the raw files."""
    files = []
    for line in (text or "").splitlines():
        if line.startswith("+++ b/"):
            path = line[6:].strip()
            if path not in files:
                files.append(path)
    return files


def attempt(fn: Callable[[], Any]) -> tuple[Any, str | None]:
    """(value, None), or (None, why it failed) for one part of a page."""
    try:
        return fn(), None
    except HiveError as e:
        return None, e.message
    except Exception as e:
        log.warning("dashboard: %s", e, exc_info=True)
        return None, f"{type(e).__name__}: {e}"


def recipients() -> list[str]:
    h = hive()
    return [h.config.manager] + sorted(n for n in h.recipients() if n not in (OPERATOR, h.config.manager))


# --- the main page -------------------------------------------------------------------------------------------

@bp.get("/")
def home():
    recent = api.recent_messages(40)
    return render_template("index.html", state=collect_state(hive(), page_offsets(request.args)),
                           recipients=recipients(), recent=recent,
                           last_id=recent[-1]["id"] if recent else 0)


@bp.get("/fragments/attention")
def attention_fragment():
    return render_template("_attention.html")


@bp.get("/fragments/home")
def home_fragment():
    return render_template("_home.html", state=collect_state(hive(), page_offsets(request.args)),
                           recipients=recipients())


# --- one agent -----------------------------------------------------------------------------------------------

def _overview(name: str) -> dict | None:
    for row in agent_rows(hive()):
        if row["name"] == name:
            with_activity(hive(), [row])
            return row
    for listing, state in ((spawn.list_drafts, "draft"), (spawn.list_tombstones, "tombstone")):
        for row in listing(hive()):
            if row.get("name") == name:
                return {"name": name, "role": "agent", "state": state, **row}
    return None


PROPOSAL_MARKS = {"pending": "proposed", "approved": "approved", "building": "building", "deployed": "deployed",
                  "failed": "failed", "denied": "denied"}


def mark_proposals(name: str, commits: list[dict], deployed_sha: str | None, tags: dict | None = None) -> None:
    """Mark each commit of the proposed repo with what became of it: ``not yet proposed``, or the state of the
    latest approval that proposed it (proposed, denied, deployed, ...) with that approval's id; the commit the
    agent runs on is ``deployed`` whatever proposed it (the seed is deployed/0)."""
    by_sha: dict[str, dict] = {}
    for a in approvals.list_approvals(hive(), "all"):
        if a["agent"] == name and a.get("sha"):
            by_sha[a["sha"]] = a  # oldest first: the latest approval of a commit wins
    for c in commits:
        a = by_sha.get(c["sha"])
        if a is not None:
            c["mark"], c["approval_id"] = PROPOSAL_MARKS.get(a["status"], a["status"]), a["id"]
        else:
            c["mark"], c["approval_id"] = "not yet proposed", None
        c["running"] = c["sha"] == deployed_sha
        if a is None:  # no approval proposed it: the seed (deployed/0), or tags older than the table
            for state in ("deployed", "failed", "denied", "proposal"):
                tagged = [t for t in (tags or {}).get(state, []) if t.get("sha") == c["sha"]]
                if tagged:
                    c["mark"] = "proposed" if state == "proposal" else state
                    c["tag"] = tagged[0]["name"]
                    break
            else:
                if c["running"]:
                    c["mark"] = "deployed"


@bp.get("/agents/<name>")
def agent_page(name):
    api.agent_name(name)
    overview, overview_error = attempt(lambda: _overview(name))
    notes_path = repos.state_path(hive(), name) / "notes.md"
    if overview is None and overview_error is None and not notes_path.parent.parent.exists():
        abort(404)
    notes, notes_error, notes_size = None, None, None
    try:
        raw = api.read_notes(api.notes_path(name), NOTES_SHOW_BYTES + 1)
        notes_size = notes_path.lstat().st_size
        notes = raw[:NOTES_SHOW_BYTES].decode("utf-8", errors="replace")
    except FileNotFoundError:
        pass
    except OSError as e:
        notes_error = str(e)
    except HiveError as e:
        notes_error = e.message
    rev = request.args.get("rev") or None
    tags, tags_error = attempt(lambda: repos.repo_tags(hive(), name))
    proposed, proposed_error = attempt(lambda: repos.proposed_history(hive(), name))
    if proposed:
        mark_proposals(name, proposed["commits"], proposed["deployed"], tags)
    log_rows, log_error = attempt(lambda: repos.repo_log(hive(), name, rev="main", limit=50))
    diff, diff_error = attempt(lambda: repos.repo_diff(hive(), name, rev)) if rev else (None, None)
    revive_queued = None
    if overview and overview.get("state") == "tombstone":
        queued = [a for a in approvals.list_approvals(hive(), "pending") if a["agent"] == name and a["kind"] == "spawn"]
        revive_queued = queued[0]["id"] if queued else None
    return render_template(
        "agent.html", name=name, revive_queued=revive_queued, proposed=proposed, proposed_error=proposed_error, agent=overview, overview_error=overview_error, notes=notes,
        notes_error=notes_error, notes_size=notes_size, notes_truncated=bool(notes_size and
                                                                            notes_size > NOTES_SHOW_BYTES),
        notes_path=str(notes_path), tags=tags, tags_error=tags_error,
        log_rows=log_rows, log_error=log_error, rev=rev, diff=diff, diff_error=diff_error,
        tag_states=api.TAG_STATES)


# --- approvals and the meta repo -----------------------------------------------------------------------------

@bp.get("/approvals/<aid>")
def approval_page(aid):
    approval = api.clip_diff(approvals.get_approval(hive(), api._approval_id(aid)))
    return render_template("approval.html", a=approval)


@bp.get("/meta")
def meta_page():
    rows, error = attempt(lambda: repos.meta_log(hive(), limit=200))
    return render_template("meta.html", rows=rows, error=error)


# --- login ---------------------------------------------------------------------------------------------------

def _next_target() -> str:
    target = local_target(request.values.get("next"))
    return "/" if target.startswith("/login") else target


@bp.get("/login")
def login_form():
    guard = current_app.extensions["guard"]
    if guard.token() is None or g.get("auth") in ("cookie", "bearer"):
        return redirect(_next_target(), 303)
    return render_template("login.html", next=_next_target(), error=None)


@bp.post("/login")
def login():
    guard = current_app.extensions["guard"]
    token = guard.token()
    if token is None:
        return redirect("/", 303)
    wait = guard.login_limiter.retry_after(request.remote_addr)
    if wait:
        raise TooManyAttempts(wait)
    if not guard.check_token((request.form.get("token") or "").strip()):
        log.warning("dashboard: failed login from %s", request.remote_addr)
        guard.login_limiter.failed(request.remote_addr)
        return render_template("login.html", next=_next_target(), error="wrong token"), 401
    response = make_response(redirect(_next_target(), 303))
    response.set_cookie(AUTH_COOKIE, guard.login_cookie_value(token), httponly=True, samesite="Strict",
                        path="/", secure=request.is_secure, max_age=guard.session_max_age)
    return response


@bp.post("/logout")
def logout():
    response = make_response(redirect("/login", 303))
    response.delete_cookie(AUTH_COOKIE, path="/", httponly=True, samesite="Strict")
    return response


@bp.get("/favicon.ico")
def favicon():
    return current_app.send_static_file("favicon.svg")

