"""The dashboard's JSON API (DESIGN's table) and its server-sent event streams.

Errors are ``{"error": {"code", "message"}}`` with the matching HTTP status. A state-changing route takes a JSON
object, or a form from the pages (then it answers with a redirect back to the page that sent it).
"""

from __future__ import annotations

import errno
import json
import math
import os
import stat
import time
from datetime import datetime, timezone
from typing import Any, Callable, Iterable
from urllib.parse import quote

from flask import Blueprint, Response, current_app, jsonify, redirect, request
from sqlalchemy import select

from .. import approvals, insight, questions, repos, spawn, telemetry
from .. import store as db
from ..broker import OPERATOR, message_dict
from ..config import check_name
from ..errors import HiveError, bad_request, not_found
from ..transport import check_text
from .security import RAW_CSP, local_target
from .state import collect_state, page_offsets, preview

bp = Blueprint("api", __name__, url_prefix="/api")

AGENT_ACTIONS = ("start", "kill", "restart", "rebuild", "destroy", "purge", "revive")
TAG_STATES = ("proposal", "approved", "building", "deployed", "failed", "denied")
HEARTBEAT_SECONDS = 15
REPLAY_LIMIT = 500


def hive():
    return current_app.extensions["hive"]


# --- request helpers -----------------------------------------------------------------------------------------

def body() -> dict:
    """The request's arguments: a JSON object, or a form's fields (a repeated field becomes a list)."""
    if request.is_json:
        raw = request.get_data(cache=True)
        if not raw.strip():
            return {}
        try:
            data = json.loads(raw)
            check_text(raw, data)
        except ValueError as e:
            raise bad_request(f"the body is not valid JSON: {e}") from None
        if not isinstance(data, dict):
            raise bad_request("the body must be a JSON object")
        return data
    out: dict[str, Any] = {}
    for key in request.form:
        if key == current_app.extensions["csrf_field"]:
            continue
        values = request.form.getlist(key)
        out[key] = values if len(values) > 1 else values[0]
    return out


def done(result: Any, status: int = 200):
    """JSON for scripts and fetch; a redirect back for a plain form post from the pages."""
    if not request.is_json and request.form and "application/json" not in request.headers.get("Accept", ""):
        return redirect(local_target(request.form.get("next")), 303)
    return jsonify(result), status


def text_arg(args: dict, name: str, *, required: bool = True) -> str | None:
    value = args.get(name)
    if value is None or value == "":
        if required:
            raise bad_request(f'missing "{name}"')
        return None
    if not isinstance(value, str):
        raise bad_request(f'"{name}" must be a string')
    return value


def int_query(name: str, default: int, low: int, high: int) -> int:
    raw = request.args.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise bad_request(f'"{name}" must be an integer, not "{raw}"') from None
    if not low <= value <= high:
        raise bad_request(f'"{name}" must be from {low} to {high}')
    return value


def parse_since(raw: str | None) -> float | None:
    """Seconds since the epoch, or an ISO 8601 time."""
    if raw is None or raw == "":
        return None
    try:
        value = float(raw)
        if math.isfinite(value):
            return value
    except ValueError:
        pass
    try:
        parsed = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise bad_request(f'"since" must be seconds since the epoch or an ISO 8601 time, not "{raw}"') from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return parsed.timestamp()


def agent_name(name: str) -> str:
    """A name that can be an agent's (so it is safe in paths); 400 otherwise."""
    if name == hive().config.manager:
        return name
    problem = check_name(name)
    if problem:
        raise bad_request(problem)
    return name


def known_agent(name: str) -> str:
    agent_name(name)
    if name not in hive().recipients() or name == OPERATOR:
        raise not_found(f'no agent "{name}"')
    return name


# --- state, questions, messages ------------------------------------------------------------------------------

@bp.get("/state")
def state():
    """Every section of ``/``; long lists come a page at a time (``questions_offset``, ``approvals_offset``,
    ``inbox_offset``), with ``counts`` and ``pages`` saying what is not shown."""
    return jsonify(collect_state(hive(), page_offsets(request.args)))


@bp.get("/attention")
def attention():
    """What needs the operator: the counts and names the header of every page shows."""
    from .state import attention as load

    return jsonify(load(hive()))


@bp.get("/questions")
def list_questions():
    status = request.args.get("status", "pending")
    limit = int_query("limit", 1000, 1, 10000)
    return jsonify({"questions": questions.list_questions(hive(), status, limit)})


@bp.get("/questions/<qid>")
def get_question(qid):
    return jsonify(questions.get_question(hive(), qid))


@bp.post("/questions/<qid>/answer")
def answer_question(qid):
    args = body()
    answer = args.get("answer")
    if request.form and not request.is_json:
        # the page's form: the option clicked (the only "choice" a single-choice form sends) is the answer, whatever
        # is typed; free text wins over ticked choices (Enter in the text field sends no option: the form's first,
        # hidden, submit button carries none)
        text = (request.form.get("answer") or "").strip()
        choices = [c for c in request.form.getlist("choice") if c.strip()]
        clicked = choices and not questions.get_question(hive(), qid).get("multi")
        answer = choices[0] if clicked else text or choices
    if answer is None or answer == "" or answer == []:
        raise bad_request('missing "answer" (a non-empty string, or a list of chosen options)')
    return done(questions.answer(hive(), qid, answer))


@bp.post("/questions/<qid>/cancel")
def cancel_question(qid):
    body()
    return done(questions.cancel(hive(), qid))


@bp.post("/questions/cancel")
def cancel_questions():
    """Every pending question (``asker``: only that agent's) cancelled at once: the end of a flood."""
    asker = text_arg(body(), "asker", required=False)
    if asker:  # a typo must not read as "cancelled 0" (as the host socket's cancel_questions)
        insight.check_agent(hive(), asker, db.questions.c.asker)
    ids = questions.cancel_all(hive(), asker)
    return done({"cancelled": len(ids), "ids": ids})


@bp.post("/inbox/read")
def mark_inbox_read():
    """The operator's messages marked read (those in ``ids``; else up to ``up_to``; else all): they stop counting
    against limits.maxUnackedPerSender."""
    args = body()
    ids = args.get("ids")
    if isinstance(ids, (str, int)) and not isinstance(ids, bool):
        ids = [ids]  # a form's one field
    if ids not in (None, "", []):
        if not isinstance(ids, list):
            raise bad_request('"ids" must be a list of message ids')
        try:
            clean = [int(i) for i in ids if not isinstance(i, bool)]
        except (TypeError, ValueError):
            raise bad_request('"ids" must be message ids (integers)') from None
        marked = hive().broker.ack(OPERATOR, clean)
    else:
        raw = args.get("up_to")
        up_to = None
        if raw not in (None, ""):
            try:
                up_to = int(raw)
            except (TypeError, ValueError):
                raise bad_request(f'"up_to" must be a message id, not "{raw}"') from None
        marked = hive().broker.mark_read(OPERATOR, up_to)
    hive().bus.publish("state", {"section": "inbox", "what": "read"})
    return done({"marked": marked})


@bp.get("/messages/<int:mid>")
def get_message(mid):
    """One message whole (the pages show long ones cut)."""
    m = db.messages
    with hive().store.read() as conn:
        row = conn.execute(select(m).where(m.c.id == mid)).first()
    if row is None:
        raise not_found(f"no message #{mid}")
    return jsonify(message_dict(row))


@bp.post("/messages")
def send_message():
    args = body()
    to = text_arg(args, "to")
    text = args.get("body")  # checked by Broker.send, as from every socket: a string, not empty or blank
    reply_to = args.get("in_reply_to")
    if reply_to in (None, ""):
        reply_to = None
    elif isinstance(reply_to, str) and reply_to.isdigit():  # a form's field
        reply_to = int(reply_to)
    msg_id = hive().broker.send(OPERATOR, to, text, in_reply_to=reply_to)
    if reply_to is not None:
        hive().broker.ack(OPERATOR, [reply_to])  # answered is read
        hive().bus.publish("state", {"section": "inbox", "what": "read"})
    return done({"id": msg_id}, 201)


def _messages_after(last_id: int, limit: int) -> list[dict]:
    m = db.messages
    with hive().store.read() as conn:
        rows = conn.execute(select(m).where(m.c.id > last_id).order_by(m.c.id).limit(limit)).all()
    return [message_dict(r) for r in rows]


def recent_messages(limit: int = 40) -> list[dict]:
    m = db.messages
    with hive().store.read() as conn:
        rows = conn.execute(select(m).order_by(m.c.id.desc()).limit(limit)).all()
    return [preview(message_dict(r), "body") for r in reversed(rows)]


def _sse(event: str | None, data: Any, event_id: Any = None) -> str:
    lines = []
    if event_id is not None:
        lines.append(f"id: {event_id}")
    if event:
        lines.append(f"event: {event}")
    payload = json.dumps(data, ensure_ascii=False)
    lines.extend(f"data: {part}" for part in payload.split("\n"))
    return "\n".join(lines) + "\n\n"


def _live(sub, replay: Iterable[str], render: Callable[[dict], Iterable[str]]) -> Response:
    """A server-sent event stream: ``replay`` first, then ``render(item)`` for each item of the subscription as it
    comes, with a keep-alive comment after HEARTBEAT_SECONDS of quiet, until the dashboard stops or the client
    goes; the subscription is closed at the end."""
    stopping = current_app.extensions["stopping"]

    def generate():
        try:
            yield "retry: 2000\n\n"
            yield from replay
            quiet_since = time.monotonic()
            while not stopping.is_set():
                item = sub.get(timeout=1)
                if item is None:
                    if time.monotonic() - quiet_since >= HEARTBEAT_SECONDS:
                        quiet_since = time.monotonic()
                        yield ": keep-alive\n\n"
                    continue
                quiet_since = time.monotonic()
                yield from render(item)
        finally:
            sub.close()

    return Response(generate(), mimetype="text/event-stream",
                    headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})


@bp.get("/messages/stream")
def message_stream():
    """Every stored message and event, live (``id`` is the message id; ``Last-Event-ID`` or ``?since=ID``
    replays what came after it). ``?state=1`` adds ``state`` events when a section of /api/state changed."""
    raw_last = request.headers.get("Last-Event-ID") or request.args.get("since")
    last_id = None
    if raw_last:
        try:
            last_id = int(raw_last)
        except ValueError:
            raise bad_request(f'"since" / Last-Event-ID must be a message id, not "{raw_last}"') from None
    channels = {"messages"} | ({"state"} if request.args.get("state") == "1" else set())
    sub = hive().bus.subscribe(channels)
    replay = _messages_after(last_id, REPLAY_LIMIT) if last_id is not None else []
    replayed_up_to = replay[-1]["id"] if replay else last_id or 0

    def render(item):
        if sub.dropped:
            sub.dropped = 0
            yield _sse("state", {"section": "all", "what": "dropped"})
        if item["channel"] == "messages":
            m = item["data"]
            if m["id"] > replayed_up_to:  # ids commit in order, so the replay held every id up to here
                yield _sse(None, preview(dict(m), "body"), m["id"])  # (the whole: GET /api/messages/<id>)
        else:
            yield _sse("state", item["data"])

    return _live(sub, (_sse(None, preview(m, "body"), m["id"]) for m in replay), render)


# --- approvals and spawning ----------------------------------------------------------------------------------

def _approval_id(raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise bad_request(f'an approval id is a positive integer, not "{raw}"') from None
    if value < 1:
        raise bad_request(f'an approval id is a positive integer, not "{raw}"')
    return value


@bp.get("/approvals")
def list_approvals():
    status = request.args.get("status", "pending")
    return jsonify({"approvals": approvals.list_approvals(hive(), status)})


DIFF_SHOW_CHARS = 200_000
STREAM_CHUNK_CHARS = 64 * 1024


def clip_diff(approval: dict) -> dict:
    """A diff longer than DIFF_SHOW_CHARS is cut at a line end for the card and the page (a 60 MB commit made a
    77 MB page); ``diff_truncated``, ``diff_chars`` and ``diff_url`` (the whole, as text) say so."""
    diff = approval.get("diff")
    if isinstance(diff, str) and len(diff) > DIFF_SHOW_CHARS:
        cut = diff.rfind("\n", 0, DIFF_SHOW_CHARS) + 1 or DIFF_SHOW_CHARS
        approval["diff"] = diff[:cut]
        approval["diff_truncated"] = True
        approval["diff_chars"] = len(diff)
        approval["diff_url"] = f"/api/approvals/{approval['id']}/diff"
    return approval


@bp.get("/approvals/<aid>")
def get_approval(aid):
    return jsonify(clip_diff(approvals.get_approval(hive(), _approval_id(aid))))


@bp.get("/approvals/<aid>/diff")
def get_approval_diff(aid):
    """The whole diff as plain text, sent in chunks (never one page-sized string in the browser's DOM)."""
    diff = approvals.get_approval(hive(), _approval_id(aid)).get("diff") or ""

    def chunks():
        for start in range(0, len(diff), STREAM_CHUNK_CHARS):
            yield diff[start:start + STREAM_CHUNK_CHARS]

    return Response(chunks(), mimetype="text/plain", headers={"Content-Security-Policy": RAW_CSP,
                                                              "Content-Disposition": f"inline; filename=\"approval-{int(aid)}.diff\""})


@bp.post("/approvals/<aid>/approve")
def approve(aid):
    """``{base?}``: the commit the diff being approved was taken against (the pages send it: what is deployed
    cannot change unseen between a look at the diff and the click)."""
    base = body().get("base") or None
    if base is not None and not isinstance(base, str):
        raise bad_request('"base" must be a string (the commit the diff was taken against)')
    return done(approvals.approve(hive(), _approval_id(aid), base))


@bp.post("/approvals/<aid>/deny")
def deny(aid):
    args = body()
    note = args.get("reason", args.get("note")) or ""
    if not isinstance(note, str):
        raise bad_request('"reason" must be a string')
    limit = hive().config.broker.max_message_bytes
    if len(note.encode()) > limit:
        raise bad_request(f'"reason" is longer than {limit} bytes')
    if not note.strip():
        raise bad_request('a denial needs a note ("reason"): say why, so the manager can do better')
    return done(approvals.deny(hive(), _approval_id(aid), note.strip()))


@bp.post("/spawn")
def spawn_now():
    """The operator spawns an agent, as `hyperhive spawn` does: recorded as an approval by the operator and
    approved at once (the build and deploy start now). The answer is that approval."""
    args = body()
    name = text_arg(args, "name")
    problem = check_name(name)
    if problem:
        raise bad_request(problem)
    approval_id = approvals.request_spawn(hive(), name, OPERATOR)
    return done(approvals.approve(hive(), approval_id), 201)


@bp.post("/agents/<name>/<action>")
def agent_action(name, action):
    body()
    agent_name(name)
    if action not in AGENT_ACTIONS:
        raise bad_request(f'unknown action "{action}" (known: {", ".join(AGENT_ACTIONS)})')
    result = spawn.agent_action(hive(), name, action, by="operator")
    return done(result if isinstance(result, dict) else {"result": result})


# --- per agent: notes, turns, telemetry ----------------------------------------------------------------------

def notes_path(name: str):
    # the manager's state lives apart from the agents' (<stateDir>/manager/state); a state directory the
    # manager swapped for a link is not followed (read_notes guards notes.md itself)
    state = repos.state_path(hive(), agent_name(name))
    repos.refuse_links(hive(), state, f"the state directory of {name}")
    return state / "notes.md"


def read_notes(path, limit: int | None = None) -> bytes:
    """notes.md's bytes (at most ``limit``). The agent writes its state dir, so only a regular file is read: a
    symlink (to a host file) is not followed, and a FIFO or device never blocks or floods the service.
    FileNotFoundError when there are none; HiveError ``forbidden`` when it is not a regular file."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise HiveError("forbidden", f"{path} is a symlink; only a regular file is shown as notes") from None
        raise
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise HiveError("forbidden", f"{path} is not a regular file; only a regular file is shown as notes")
        return f.read() if limit is None else f.read(limit)


@bp.get("/agents/<name>/notes")
def notes(name):
    path = notes_path(name)
    try:
        data = read_notes(path)
    except FileNotFoundError:
        raise not_found(f"{name} has no notes yet ({path})") from None
    return Response(data, mimetype="text/plain", headers={"Content-Security-Policy": RAW_CSP})


@bp.get("/agents/<name>/turns/stream")
def turn_stream(name):
    """The live turn view of one agent: recent history first, then every turn event as it happens."""
    known_agent(name)
    channel = f"turn:{name}"
    sub = hive().bus.subscribe({channel})
    history = hive().bus.recent(channel)
    seen = {item["seq"] for item in history}

    def render(item):
        if item["seq"] not in seen:
            yield _sse(None, item["data"], item["seq"])

    return _live(sub, (_sse(None, item["data"], item["seq"]) for item in history), render)


@bp.get("/stats")
def stats():
    agent = request.args.get("agent") or None
    key = request.args.get("key") or None
    since = parse_since(request.args.get("since"))
    limit = int_query("limit", 5000, 1, 100000)
    if agent is not None and agent != telemetry.HIVE_AGENT:
        # a typo is not_found, not "no samples" (an agent that was, destroyed or purged, has its history)
        insight.check_agent(hive(), agent_name(agent), db.stats.c.agent)
    return jsonify(telemetry.query(hive(), agent=agent, key=key, since=since, limit=limit))


# --- config repo browser -------------------------------------------------------------------------------------

@bp.get("/agents/<name>/repo/tags")
def repo_tags(name):
    return jsonify(repos.repo_tags(hive(), agent_name(name)))


@bp.get("/agents/<name>/repo/log")
def repo_log(name):
    rev = request.args.get("rev") or "main"
    limit = int_query("limit", 50, 1, 1000)
    return jsonify(repos.repo_log(hive(), agent_name(name), rev=rev, limit=limit))


@bp.get("/agents/<name>/repo/diff/<path:rev>")
def repo_diff(name, rev):
    diff = repos.repo_diff(hive(), agent_name(name), rev)
    return jsonify({"rev": rev, "diff": diff})


def split_rev_path(rest: str) -> tuple[str, str]:
    """``<rev>/<path>``; a tag of the audit trail (``deployed/3``) is one rev despite its slash."""
    parts = rest.split("/")
    take = 2 if len(parts) > 2 and parts[0] in TAG_STATES else 1
    rev, path = "/".join(parts[:take]), "/".join(parts[take:])
    if not rev or not path:
        raise bad_request("use .../repo/file/<rev>/<path>")
    return rev, path


@bp.get("/agents/<name>/repo/file/<path:rest>")
def repo_file(name, rest):
    rev, path = split_rev_path(rest)
    data = repos.repo_file(hive(), agent_name(name), rev, path)
    if isinstance(data, str):
        data = data.encode("utf-8")
    try:
        data.decode("utf-8")
        mimetype = "text/plain"
    except UnicodeDecodeError:
        mimetype = "application/octet-stream"
    return Response(data, mimetype=mimetype, headers={
        "Content-Security-Policy": RAW_CSP, "Content-Disposition": inline_disposition(path.rsplit("/", 1)[-1])})


def inline_disposition(filename: str) -> str:
    """``inline`` with the file's name: plain ASCII for old clients, RFC 5987 UTF-8 for the rest (a header must
    stay Latin-1 without quotes or control characters, whatever the repo's file is called)."""
    plain = "".join(c if 32 <= ord(c) < 127 and c not in '"\\' else "_" for c in filename)
    return f"inline; filename=\"{plain}\"; filename*=UTF-8''{quote(filename, safe='')}"


@bp.get("/meta/log")
def meta_log():
    limit = int_query("limit", 100, 1, 10000)
    return jsonify(repos.meta_log(hive(), limit=limit))
