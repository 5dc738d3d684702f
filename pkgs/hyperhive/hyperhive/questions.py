"""Operator questions: an agent asks, the operator answers (dashboard or CLI), cancels, or the TTL lapses.

Every way a question ends delivers one ``event`` to the asker carrying the question and the answer
(``[cancelled]`` and ``[expired]`` for the two ways without one). A stored question always lists: rows written by
older schema versions (options NULL, '' or not JSON, no ``multi``/``expires_at``) and rows with odd content decode
as far as they can and keep their raw text.
"""

from __future__ import annotations

import json
import logging
import math
import time
from types import SimpleNamespace
from typing import Any

from sqlalchemy import func, select, update

from . import store as db
from .due import DueThread
from .errors import HiveError, bad_request, conflict, not_found
from .times import when

log = logging.getLogger(__name__)

STATUSES = ("pending", "answered", "cancelled", "expired")
CANCELLED = "[cancelled]"
EXPIRED = "[expired]"
MAX_OPTIONS = 50
MAX_OPTION_CHARS = 500
MAX_TTL_SECONDS = 90 * 86400
STATE_CHANNEL = "state"


# --- reading -------------------------------------------------------------------------------------------------

def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return str(value)


def _time(value: Any) -> str | None:
    """An ISO time for a stored timestamp; a value an old version stored as text is shown as it is."""
    if value is None or value == "":
        return None
    if isinstance(value, (int, float)) and math.isfinite(value):
        return db.iso(float(value))
    return _text(value)


def _options(raw: Any) -> tuple[list[str], str | None]:
    """(options, problem): a JSON list of strings is the norm; anything else still yields what it can."""
    if raw is None or raw == "" or raw == b"":
        return [], None
    decoded = db.loads_json(_text(raw), None)
    if isinstance(decoded, list):
        # a non-string option shows as its JSON text; an empty one could not be told apart, so it goes
        options = [o if isinstance(o, str) else json.dumps(o, ensure_ascii=False) for o in decoded]
        return [o for o in options if o.strip()], None
    if isinstance(decoded, str) and decoded == _text(raw):
        return [], "options are not JSON"
    return [], "options are not a JSON list"


def question_dict(row) -> dict:
    """The API form of one row; never raises, whatever an older version stored."""
    m = row._mapping
    out: dict[str, Any] = {"id": m["id"]}
    try:
        options, problem = _options(m.get("options"))
        multi = m.get("multi")
        out.update({
            "asker": _text(m.get("asker")),
            "question": _text(m.get("question")),
            "options": options,
            "multi": bool(multi) if isinstance(multi, (int, float)) else False,
            "created_at": _time(m.get("created_at")),
            "expires_at": _time(m.get("expires_at")),
            "status": _text(m.get("status")),
            "answer": None if m.get("answer") is None else _text(m.get("answer")),
            "answered_at": _time(m.get("answered_at")),
        })
        if problem:
            out["options_raw"] = _text(m.get("options"))
            out["decode_error"] = problem
    except Exception as e:  # a row this odd still lists, with its raw columns
        log.warning("question %s does not decode: %s", m.get("id"), e)
        out.update({k: _text(v) if v is not None else None for k, v in m.items() if k != "id"})
        out.setdefault("options", [])
        out["decode_error"] = f"{type(e).__name__}: {e}"
    return out


def list_questions(hive, status: str | None = "pending", limit: int = 1000, offset: int = 0) -> list[dict]:
    """Questions with ``status`` (None or "all" for every one), oldest first for pending, newest first else."""
    q = db.questions
    query = select(q)
    if status not in (None, "all"):
        if status not in STATUSES:
            raise bad_request(f'unknown question status "{status}" (known: {", ".join(STATUSES)}, all)')
        query = query.where(q.c.status == status)
    query = query.order_by(q.c.id if status == "pending" else q.c.id.desc()).limit(limit).offset(offset)
    with hive.store.read() as conn:
        rows = conn.execute(query).all()
    return [question_dict(r) for r in rows]


def get_question(hive, question_id: int) -> dict:
    q = db.questions
    with hive.store.read() as conn:
        row = conn.execute(select(q).where(q.c.id == _id(question_id))).first()
    if row is None:
        raise not_found(f"no question #{question_id}")
    return question_dict(row)


# --- asking --------------------------------------------------------------------------------------------------

def ask(hive, asker: str, question: str, options: list[str] | None = None, multi: bool = False,
        ttl_seconds: float | None = None) -> int:
    """Store a question for the operator and return its id at once."""
    if not isinstance(question, str) or not question.strip():
        raise bad_request('"question" must be a non-empty string')
    limit = hive.config.broker.max_message_bytes
    size = len(question.encode("utf-8"))
    if size > limit:
        raise HiveError("too_large", f"question is {size} bytes; the limit is {limit} (maxMessageBytes)")
    if options is not None:
        if not isinstance(options, list):
            raise bad_request('"options" must be a list of strings')
        if len(options) > MAX_OPTIONS:
            raise bad_request(f'"options" holds {len(options)} entries; at most {MAX_OPTIONS}')
        for i, option in enumerate(options):
            if not isinstance(option, str) or not option.strip():
                raise bad_request(f"options[{i}] must be a non-empty string")
            if len(option) > MAX_OPTION_CHARS:
                raise bad_request(f"options[{i}] is longer than {MAX_OPTION_CHARS} characters")
        if len(set(options)) != len(options):
            raise bad_request('"options" must not repeat an option')
    if not isinstance(multi, bool):
        raise bad_request('"multi" must be a boolean')
    if multi and not options:
        raise bad_request('"multi" needs "options" to choose from')
    if ttl_seconds is not None:
        if isinstance(ttl_seconds, bool) or not isinstance(ttl_seconds, (int, float)) \
                or not math.isfinite(ttl_seconds) or not 0 < ttl_seconds <= MAX_TTL_SECONDS:
            raise bad_request(f'"ttl_seconds" must be a number of seconds above 0 and at most {MAX_TTL_SECONDS} '
                              "(leave it out for no expiry)")
    created = time.time()
    expires = created + ttl_seconds if ttl_seconds is not None else None
    with hive.store.write() as conn:
        _check_quota(hive, conn, asker)
        qid = conn.execute(db.questions.insert().values(
            asker=asker, question=question, options=json.dumps(options or []), multi=int(multi),
            created_at=created, expires_at=expires, status="pending")).inserted_primary_key[0]
    log.info("question #%d from %s", qid, asker)
    _changed(hive, qid, "asked")
    if expires is not None:
        expiry = hive.extensions.get("questions_expiry")
        if expiry is not None:
            expiry.wake()
    return qid


def _check_quota(hive, conn, asker: str) -> None:
    """``limits.maxPendingQuestions`` per asker, counted in the insert's transaction."""
    if asker == "operator":
        return
    limit = hive.config.limits.max_pending_questions
    q = db.questions
    waiting = conn.execute(select(func.count()).select_from(q).where(q.c.status == "pending",
                                                                     q.c.asker == asker)).scalar()
    if waiting >= limit:
        raise conflict(f"{asker} already has {waiting} questions pending; the limit is {limit} "
                       "(limits.maxPendingQuestions): wait for the operator's answers (they come as events)")


# --- ending --------------------------------------------------------------------------------------------------

def answer(hive, question_id: int, text: str | list[str]) -> dict:
    """Answer a pending question (a list of choices is joined with ", ") and tell the asker."""
    if isinstance(text, list):
        if not text or not all(isinstance(t, str) and t.strip() for t in text):
            raise bad_request('"answer" must be a non-empty string, or a non-empty list of non-empty strings')
        text = ", ".join(t.strip() for t in text)
    if not isinstance(text, str) or not text.strip():
        raise bad_request('"answer" must be a non-empty string')
    text = text.strip()
    limit = hive.config.broker.max_message_bytes
    size = len(text.encode("utf-8"))
    if size > limit:
        raise HiveError("too_large", f"answer is {size} bytes; the limit is {limit} (maxMessageBytes)")
    return _finish(hive, question_id, "answered", text)


def cancel(hive, question_id: int) -> dict:
    """Withdraw a pending question; the asker hears ``[cancelled]``."""
    return _finish(hive, question_id, "cancelled", CANCELLED)


def cancel_all(hive, asker: str | None = None) -> list[int]:
    """Withdraw every pending question (only ``asker``'s when given) in one transaction; each asker hears
    ``[cancelled]`` for each of its questions. Returns the ids cancelled."""
    if asker is not None and (not isinstance(asker, str) or not asker):
        raise bad_request('"asker" must be an agent name')
    q = db.questions
    now = time.time()
    cond = [q.c.status == "pending"] + ([q.c.asker == asker] if asker is not None else [])
    with hive.store.write() as conn:
        rows = conn.execute(select(q).where(*cond).order_by(q.c.id)).all()
        ids = [r.id for r in rows]
        for start in range(0, len(ids), 500):  # (SQLite bounds the parameters of one statement)
            conn.execute(update(q).where(q.c.id.in_(ids[start:start + 500]))
                         .values(status="cancelled", answer=CANCELLED, answered_at=now))
    ended = [question_dict(SimpleNamespace(_mapping={**r._mapping, "status": "cancelled", "answer": CANCELLED,
                                                      "answered_at": now})) for r in rows]
    for question in ended:
        _tell_asker(hive, question)
    if ids:
        log.info("cancelled %d pending question(s)%s", len(ids), f" of {asker}" if asker else "")
        hive.bus.publish(STATE_CHANNEL, {"section": "questions", "what": "cancelled", "count": len(ids)})
    return ids


def expire_due(hive, now: float | None = None) -> int:
    """End every pending question whose TTL has lapsed; the askers hear ``[expired]``."""
    now = time.time() if now is None else now
    q = db.questions
    with hive.store.read() as conn:
        due = conn.execute(select(q.c.id).where(q.c.status == "pending", q.c.expires_at.is_not(None),
                                                q.c.expires_at <= now).order_by(q.c.id)).scalars().all()
    ended = 0
    for qid in due:
        try:
            _finish(hive, qid, "expired", EXPIRED, now=now)
            ended += 1
        except HiveError:
            pass  # answered or cancelled a moment ago
    return ended


def next_expiry(hive) -> float | None:
    q = db.questions
    with hive.store.read() as conn:
        return conn.execute(select(func.min(q.c.expires_at)).where(
            q.c.status == "pending", q.c.expires_at.is_not(None))).scalar()


def _id(question_id: Any) -> int:
    if isinstance(question_id, bool):
        raise bad_request("a question id is a positive integer")
    try:
        value = int(question_id)
    except (TypeError, ValueError):
        raise bad_request(f'a question id is a positive integer, not "{question_id}"') from None
    if value < 1:
        raise bad_request(f'a question id is a positive integer, not "{question_id}"')
    return value


def _finish(hive, question_id: int, status: str, text: str, now: float | None = None) -> dict:
    qid = _id(question_id)
    q = db.questions
    now = time.time() if now is None else now
    with hive.store.write() as conn:
        row = conn.execute(select(q).where(q.c.id == qid)).first()
        if row is None:
            raise not_found(f"no question #{qid}")
        if row.status != "pending":
            done = question_dict(row)
            what = {"answered": f'answered ("{done["answer"]}")', "cancelled": "cancelled",
                    "expired": "expired"}.get(done["status"], done["status"])
            raise conflict(f"question #{qid} is no longer pending: it was {what}"
                           + (f" at {when(done['answered_at'])}" if done.get("answered_at") else ""))
        if status == "answered" and row.asker != "system" and row.asker not in hive.recipients(fresh=True):
            raise conflict(f"{row.asker} is no longer an agent of this hive, so it would never hear the answer to "
                           f"question #{qid}: cancel the question instead")
        conn.execute(update(q).where(q.c.id == qid, q.c.status == "pending")
                     .values(status=status, answer=text, answered_at=now))
        row = conn.execute(select(q).where(q.c.id == qid)).first()
    result = question_dict(row)
    _tell_asker(hive, result)
    _changed(hive, qid, status)
    try:
        hive.pm.hook.question_resolved(hive=hive, question=result)
    except Exception:  # an observer must never undo an answer the operator gave
        log.exception("a question_resolved hook failed for question %s", qid)
    return result


def _tell_asker(hive, question: dict) -> None:
    status, text, asker = question["status"], question["answer"], question["asker"]
    short = question["question"] if len(question["question"]) <= 200 else question["question"][:199] + "…"
    asked = f'your question #{question["id"]} ("{short}")'
    body = {"answered": f"operator answered {asked}: {text}",
            "cancelled": f"operator cancelled {asked}: {text}",
            "expired": f"{asked} expired unanswered: {text}"}[status]
    data = {"question_id": question["id"], "question": question["question"], "answer": text, "status": status}
    if asker == "system":
        return  # the service asked (a budget): the question_resolved hook acts on the answer
    # An event about an agent reaches its manager too (DESIGN); anyone else (the operator) hears it alone.
    if asker in hive.agent_configs() or asker == hive.config.manager:
        hive.notify(asker, body, **data)
    else:
        hive.broker.event(asker, body, **data)


def _changed(hive, qid: int, what: str) -> None:
    hive.bus.publish(STATE_CHANNEL, {"section": "questions", "id": qid, "what": what})


# --- expiry without polling ----------------------------------------------------------------------------------

def expiry_thread(hive) -> DueThread:
    """Sleeps until the next question is due (or a new one with a TTL is asked), then expires what is due."""
    return DueThread("questions-expiry", lambda: expire_due(hive), lambda: next_expiry(hive))
